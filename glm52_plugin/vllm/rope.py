"""Interleaved RoPE for the CPU DSA path through vLLM's fused rotary kernel, with the reference's
cos/sin values.

The reference's complex-number RoPE is ~6 torch ops (~60 us at toy sizes on CPU) per tensor;
vLLM's ``rotary_embedding`` kernel rotates q and k in place in one call (~10 us). It runs in
fp32 on an fp32 table built here from ``reference.layers.Rotary`` (not from vLLM's own buffer,
which holds the model dtype's rounding of it), grown to the largest position seen. Without the
kernel (another vLLM build), the reference function runs instead.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from glm52_plugin.reference.layers import Rotary, apply_rope_interleaved


def _kernel() -> Callable[..., None] | None:
    try:
        from vllm import _custom_ops as ops
    except ImportError:
        return None
    if not hasattr(torch.ops._C, "rotary_embedding"):
        return None
    return ops.rotary_embedding


class InterleavedRope:
    """rotate(positions, q [T, H, R], k [T, H_k, R]) for every DSA layer of one model."""

    def __init__(self, rotary: Rotary) -> None:
        self.rotary = rotary
        self.kernel = _kernel()
        self.cos_sin: Tensor | None = None

    def table(self, positions: int) -> Tensor:
        """fp32 [P, R] = cos | sin of the reference for positions 0..P-1 (P >= ``positions``)."""
        have = self.cos_sin
        if have is None or have.shape[0] < positions:
            size = max(positions, 2 * (0 if have is None else have.shape[0]), 1024)
            cis = self.rotary(torch.arange(size))
            self.cos_sin = torch.cat((cis.real, cis.imag), -1).contiguous()
        return self.cos_sin

    def rotate(self, positions: Tensor, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """Rotate the first R (rope) dims of every head of q [T, H, D] and k [T, H_k, D].

        Results are fp32 (callers cast, as the reference does after its fp32 rotation). The
        kernel takes [T, heads * D] rows (a 3-D query is misread) whose last dim is dense: k's
        rows may be strided, q is copied if its heads are not adjacent. Use the results:
        whether the inputs were rotated in place is not promised.
        """
        if self.kernel is None:
            cis = self.rotary(positions)
            return _reference(q.float(), cis), _reference(k.float(), cis)
        # in fp32 with the fp32 table, as the reference (which casts back to x's dtype after)
        rows_q = q.reshape(q.shape[0], -1).float()
        rows_k = k.reshape(k.shape[0], -1).float()
        table = self.table(int(positions.max()) + 1)
        self.kernel(positions, rows_q, rows_k, q.shape[-1], table, False)
        return rows_q.view(q.shape), rows_k.view(k.shape)


def _reference(x: Tensor, cis: Tensor) -> Tensor:
    r = cis.shape[-1] * 2
    rotated = apply_rope_interleaved(x[None, ..., :r], cis)[0]
    return rotated if x.shape[-1] == r else torch.cat((rotated, x[..., r:]), -1)

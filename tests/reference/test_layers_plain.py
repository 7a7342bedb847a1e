"""The plain modules of reference/layers.py against straightforward per-token formulas."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from glm52_plugin.config import Glm52Config
from glm52_plugin.reference.layers import MoE, apply_rope_interleaved


def test_moe_equals_per_token_sum_over_chosen_experts() -> None:
    """One path for every batch shape: shared expert + sum_a w_a * expert_a(x), token by token."""
    torch.manual_seed(0)
    cfg = Glm52Config.toy(2)
    moe = MoE(cfg, torch.float64)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.2)
    torch.nn.init.normal_(moe.gate.e_score_correction_bias, std=0.1)
    x = torch.randn(2, 5, cfg.hidden_size, dtype=torch.float64)
    with torch.no_grad():
        got = moe(x).view(10, -1)
        flat = x.view(10, -1)
        weights, ids = moe.gate(flat)  # the fp32 router, on the same batch
        for t in range(10):
            tok = flat[t : t + 1]
            want = moe.shared_experts(tok)
            for e, w in zip(ids[t].tolist(), weights[t].tolist(), strict=True):
                ex = moe.experts[e]
                want = want + w * ex.down_proj(F.silu(ex.gate_proj(tok)) * ex.up_proj(tok))
            torch.testing.assert_close(got[t : t + 1], want, rtol=1e-12, atol=1e-12)
            # a single token alone (decode) takes the same path; only the fp32 router's GEMM
            # over one row instead of ten rounds differently
            torch.testing.assert_close(moe(tok), want, rtol=1e-5, atol=1e-5)


def test_interleaved_rope_is_a_complex_rotation_of_each_pair() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 4, 8, generator=gen, dtype=torch.float64)  # [B, S, H, R]
    angles = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    cis = torch.polar(torch.full_like(angles, 1.5), angles)  # with an attention factor
    want = torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (-1, 2))) * cis[:, None])
    got = apply_rope_interleaved(x.float(), cis.to(torch.complex64))
    torch.testing.assert_close(got, want.flatten(-2).float(), rtol=1e-6, atol=1e-6)

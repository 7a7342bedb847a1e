"""Building blocks of the reference model: RMSNorm, interleaved RoPE, SwiGLU MLP, router, MoE.

Follows transformers 5.23 ``modeling_glm_moe_dsa.py`` and vLLM 0.33 ``deepseek_v2.py`` (spec
sections 2, 6 and 7). Shape legend as in ``model.py``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glm52_plugin.config import Glm52Config, yarn_mscale


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) in fp32, cast back, then * weight (as every engine does)."""

    def __init__(self, dim: int, eps: float, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, dtype=dtype))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class Rotary(nn.Module):
    """cos/sin tables for the rope part of MLA and indexer heads (default or YaRN)."""

    def __init__(self, cfg: Glm52Config) -> None:
        super().__init__()
        dim = cfg.qk_rope_head_dim
        rope = cfg.rope_parameters
        base = rope.rope_theta
        pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim)
        inv_freq = 1.0 / pos_freqs
        self.attention_factor = 1.0
        if rope.rope_type == "yarn":
            inv_freq, self.attention_factor = _yarn(cfg, pos_freqs, dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        """positions [S] -> complex64 [S, R/2]: attention_factor * e^(i * pos * inv_freq_j)."""
        freqs = positions.float()[:, None] * self.inv_freq
        return torch.polar(torch.full_like(freqs, self.attention_factor), freqs)


def _yarn(cfg: Glm52Config, pos_freqs: Tensor, dim: int) -> tuple[Tensor, float]:
    # as transformers 5.23 modeling_rope_utils._compute_yarn_parameters
    rope = cfg.rope_parameters
    factor = cfg.yarn_factor()
    omp = rope.original_max_position_embeddings
    assert omp is not None  # checked by the config parser
    attention_factor = rope.attention_factor
    if attention_factor is None:
        if rope.mscale and rope.mscale_all_dim:
            attention_factor = yarn_mscale(factor, rope.mscale) / yarn_mscale(
                factor, rope.mscale_all_dim
            )
        else:
            attention_factor = yarn_mscale(factor)
    beta_fast, beta_slow = rope.beta_fast or 32, rope.beta_slow or 1

    def correction_dim(rot: float) -> float:
        return (dim * math.log(omp / (rot * 2 * math.pi))) / (2 * math.log(rope.rope_theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if rope.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrapolation = 1 - ramp
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (
        1.0 / pos_freqs
    ) * extrapolation
    return inv_freq, float(attention_factor)


def apply_rope_interleaved(x: Tensor, cis: Tensor) -> Tensor:
    """Rotate pairs (2i, 2i+1) of x [B, S, ..., R] by angle i; cis complex [S, R/2].

    A pair is one complex number, so the rotation (x1 cos - x2 sin, x2 cos + x1 sin) is one
    complex multiply. Pairs stay in place (engine cache layout); transformers emits
    [evens | odds] instead, the same permutation on q and k, so attention scores are identical.
    """
    shape = (1, cis.shape[0]) + (1,) * (x.dim() - 3) + (cis.shape[1],)
    xf = x if x.dtype == torch.float32 else x.float()
    out = torch.view_as_real(torch.view_as_complex(xf.unflatten(-1, (-1, 2))) * cis.view(shape))
    return out.flatten(-2) if x.dtype == torch.float32 else out.flatten(-2).to(x.dtype)


class FusedWeight:
    """Row-concatenation of several weights, rebuilt only when one of them changes: one GEMM where
    the engines fuse too (q_a + kv_a + indexer wk, gate + up). Not a module: no checkpoint key."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value: Tensor | None = None

    def get(self, *weights: Tensor) -> Tensor:
        key = tuple((w.data_ptr(), w._version, w.dtype) for w in weights)
        if key != self._key or self._value is None:
            self._value = torch.cat([w.detach() for w in weights])
            self._key = key
        return self._value


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)). Dense FFN, each routed expert and the shared expert."""

    def __init__(
        self, hidden: int, inter: int, dtype: torch.dtype | None = None, fuse: bool = True
    ) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False, dtype=dtype)
        self.up_proj = nn.Linear(hidden, inter, bias=False, dtype=dtype)
        self.down_proj = nn.Linear(inter, hidden, bias=False, dtype=dtype)
        # routed experts stay unfused: a fused copy would double the largest weights
        self._gate_up = FusedWeight() if fuse else None

    def forward(self, x: Tensor) -> Tensor:
        if self._gate_up is None:
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        gate, up = F.linear(x, self._gate_up.get(self.gate_proj.weight, self.up_proj.weight)).chunk(
            2, -1
        )
        return self.down_proj(F.silu(gate) * up)


class Gate(nn.Module):
    """Sigmoid router with noaux_tc bias, group-limited top-k, normalised un-biased weights."""

    def __init__(self, cfg: Glm52Config, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.hidden_size, dtype=dtype))
        # fp32 always: a bf16 bias "collapses it and reorders top-k routing" (SGLang comment)
        self.register_buffer("e_score_correction_bias", torch.zeros(cfg.n_routed_experts))
        self.top_k = cfg.num_experts_per_tok
        self.n_group, self.topk_group = cfg.n_group, cfg.topk_group
        self.norm_topk_prob = cfg.norm_topk_prob
        self.routed_scaling_factor = cfg.routed_scaling_factor

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [N, D] -> (weights fp32 [N, A], expert ids [N, A])."""
        # fp32 router: GLM-5 configs need it but don't declare moe_router_dtype
        scores = F.linear(x.float(), self.weight.float()).sigmoid()  # [N, E]
        choice = scores + self.e_score_correction_bias
        if self.n_group > 1:
            n = choice.shape[0]
            grouped = choice.view(n, self.n_group, -1)
            group_scores = grouped.topk(2, dim=-1).values.sum(-1)  # [N, groups]
            keep = group_scores.topk(self.topk_group, dim=-1, sorted=False).indices
            group_mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, keep, True)
            choice = choice.masked_fill(
                ~group_mask[..., None].expand_as(grouped).reshape(n, -1), -math.inf
            )
        ids = choice.topk(self.top_k, dim=-1, sorted=False).indices  # [N, A]
        weights = scores.gather(1, ids)  # selection uses the bias, weights do not
        if self.norm_topk_prob:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        return weights * self.routed_scaling_factor, ids


class MoE(nn.Module):
    """Routed experts (one 2-D weight per expert, as in the checkpoint) plus the shared expert."""

    def __init__(self, cfg: Glm52Config, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        d, inter = cfg.hidden_size, cfg.moe_intermediate_size
        self.gate = Gate(cfg, dtype)
        self.experts = nn.ModuleList(
            MLP(d, inter, dtype, fuse=False) for _ in range(cfg.n_routed_experts)
        )
        self.shared_experts = MLP(d, inter * cfg.n_shared_experts, dtype)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # [N, D]
        weights, ids = self.gate(flat)  # [N, A]
        out = self.shared_experts(flat)
        if flat.shape[0] == 1:  # decode: no grouping work, just the A chosen experts
            for e, w in zip(ids[0].tolist(), weights[0], strict=True):
                out = out + (self.experts[e](flat) * w).to(out.dtype)
            return out.view(shape)
        routed = torch.zeros_like(flat)
        # Loop over the experts actually hit: cost follows the active experts, not E.
        for e in ids.unique().tolist():
            token, slot = (ids == e).nonzero(as_tuple=True)
            y = self.experts[e](flat[token]) * weights[token, slot, None]
            routed.index_add_(0, token, y.to(routed.dtype))
        return (routed + out).view(shape)

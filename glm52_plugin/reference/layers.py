"""The reference model's layers: RMSNorm, interleaved RoPE, SwiGLU MLP, router, MoE, and DSA
sparse MLA (lightning indexer + absorbed multi-head latent attention over the top-k tokens).

Follows transformers 5.23 ``modeling_glm_moe_dsa.py``, vLLM 0.33 ``deepseek_v2.py`` and
DeepSeek-V3.2-Exp ``inference/model.py`` (``Indexer``, ``MLA``) with GLM's deltas: interleaved RoPE
in both MLA and indexer, IndexShare (shared layers own no indexer and reuse the previous full
layer's top-k). Attention gathers only the selected cache rows, so its cost grows with index_topk,
not with context. Plain modules only: the fused, stacked and compiled decode step is
``compiled.py``. Shape legend as in ``model.py``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glm52_plugin.config import Glm52Config, yarn_mscale
from glm52_plugin.reference.cache import LayerCache


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

    A pair (x1, x2) is the complex number x1 + i x2, rotated by one complex multiply written in
    real arithmetic, (x1 cos - x2 sin, x2 cos + x1 sin), so Inductor can compile it too. Pairs
    stay in place (engine cache layout); transformers emits [evens | odds] instead, the same
    permutation on q and k, so attention scores are identical.
    """
    shape = (1, cis.shape[0]) + (1,) * (x.dim() - 3) + (cis.shape[1],)
    re, im = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cis.real.view(shape), cis.imag.view(shape)
    out = torch.stack((re * cos - im * sin, re * sin + im * cos), -1)
    return out.flatten(-2).to(x.dtype)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)). Dense FFN, each routed expert and the shared expert."""

    def __init__(self, hidden: int, inter: int, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False, dtype=dtype)
        self.up_proj = nn.Linear(hidden, inter, bias=False, dtype=dtype)
        self.down_proj = nn.Linear(inter, hidden, bias=False, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


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
        self.experts = nn.ModuleList(MLP(d, inter, dtype) for _ in range(cfg.n_routed_experts))
        self.shared_experts = MLP(d, inter * cfg.n_shared_experts, dtype)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # [N, D]
        weights, ids = self.gate(flat)  # [N, A]
        out = self.shared_experts(flat)
        routed = torch.zeros_like(flat)
        # (token, slot) pairs grouped by expert, in token order within each; one host sync
        pairs = ids.flatten().argsort(stable=True)
        counts = torch.bincount(ids.flatten(), minlength=len(self.experts)).tolist()
        start = 0
        for e, n in enumerate(counts):  # ascending expert id; cost follows the experts hit
            if n:
                hit = pairs[start : start + n]
                token = hit // ids.shape[1]
                y = self.experts[e](flat[token]) * weights.flatten()[hit, None]
                routed.index_add_(0, token, y.to(routed.dtype))
                start += n
        return (routed + out).view(shape)


# Query rows per chunk: bounds the [rows, K, C] gather and the [rows, H_I, T] indexer scores.
_CHUNK_ELEMENTS = 1 << 24


def _chunks(n_queries: int, per_query: int) -> list[slice]:
    if n_queries == 1:  # decode; also keeps a traced graph free of guards on the cache length
        return [slice(0, 1)]
    step = max(1, _CHUNK_ELEMENTS // max(per_query, 1))
    return [slice(i, min(i + step, n_queries)) for i in range(0, n_queries, step)]


class Indexer(nn.Module):
    """Lightning indexer: I[t, j] = sum_h w[t, h] * ReLU(q_I[t, h] . k_I[j] / sqrt(D_I)); causal top-k."""

    def __init__(self, cfg: Glm52Config, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.n_heads, self.head_dim = cfg.index_n_heads, cfg.index_head_dim
        self.rope_dim = cfg.qk_rope_head_dim
        self.topk = cfg.index_topk
        self.wq_b = nn.Linear(
            cfg.q_lora_rank, self.n_heads * self.head_dim, bias=False, dtype=dtype
        )
        self.wk = nn.Linear(cfg.hidden_size, self.head_dim, bias=False, dtype=dtype)
        self.k_norm = nn.LayerNorm(self.head_dim, eps=1e-6, dtype=dtype)
        # fp32 head weights, as transformers' _keep_in_fp32_modules
        self.weights_proj = nn.Linear(cfg.hidden_size, self.n_heads, bias=False)

    def forward(
        self,
        x: Tensor,
        cq: Tensor,
        cis: Tensor,
        positions: Tensor,
        cache: LayerCache,
        wk_x: Tensor | None = None,
    ) -> Tensor:
        """x [B, S, D], cq [B, S, Q] -> top-k key positions int64 [B, S, K], K = min(topk, T).

        ``wk_x`` is ``wk(x)`` when the caller computed it in a fused projection.
        """
        b, s, _ = x.shape
        r = self.rope_dim
        q = self.wq_b(cq).view(b, s, self.n_heads, self.head_dim)
        # GLM: rope FIRST in the indexer ([rope | pass]), unlike MLA's [nope | rope]
        q = torch.cat((apply_rope_interleaved(q[..., :r], cis), q[..., r:]), -1)
        k = self.k_norm(self.wk(x) if wk_x is None else wk_x)  # [B, S, D_I], norm before RoPE
        k = torch.cat((apply_rope_interleaved(k[..., :r], cis), k[..., r:]), -1)
        assert cache.index_k is not None, "full layer without an indexer cache"
        keys = cache.index_k.append(k)  # [B, T, D_I]
        weights = self.weights_proj(x.float()) * self.n_heads**-0.5  # [B, S, H_I]
        return indexer_topk(q, weights, keys, positions, self.topk, self.head_dim**-0.5)


def indexer_topk(
    q: Tensor, weights: Tensor, keys: Tensor, positions: Tensor, topk: int, scale: float
) -> Tensor:
    """Causal top-k of I[t, j] = sum_h weights[t, h] * ReLU(q[t, h] . keys[j] * scale), in fp32.

    q [B, S, H_I, D_I] (rotated), weights [B, S, H_I], keys [B, T, D_I], positions [S] of the
    queries (keys are positions 0..T-1) -> int64 [B, S, min(topk, T)].
    """
    b, s = q.shape[:2]
    keys = keys.float()
    t = keys.shape[1]
    k_sel = min(topk, t)
    key_pos = torch.arange(t, device=q.device)
    out = torch.empty(b, s, k_sel, dtype=torch.long, device=q.device)
    for rows in _chunks(s, q.shape[2] * t):
        scores = torch.matmul(q[:, rows].float(), keys.transpose(1, 2).unsqueeze(1)) * scale
        index = torch.matmul(weights[:, rows].unsqueeze(-2), F.relu(scores)).squeeze(-2)
        future = key_pos[None, :] > positions[rows, None]  # [S, T]
        index = index.masked_fill(future, -math.inf)
        # ReLU makes exact ties common (a key no head scores above 0); a stable sort breaks
        # them toward the earlier position, so the choice never depends on T or chunking
        order = index.sort(dim=-1, descending=True, stable=True).indices
        out[:, rows] = order[..., :k_sel]
    return out


class MLA(nn.Module):
    """Multi-head latent attention with q/kv LoRA; decode-style absorbed kv_b_proj for all steps."""

    def __init__(
        self, cfg: Glm52Config, has_indexer: bool, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        self.n_heads = cfg.num_attention_heads
        self.nope, self.rope = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim
        self.v_dim, self.kv_rank = cfg.v_head_dim, cfg.kv_lora_rank
        self.scale = cfg.softmax_scale
        h, d = self.n_heads, cfg.hidden_size
        bias = cfg.attention_bias
        self.q_a_proj = nn.Linear(d, cfg.q_lora_rank, bias=bias, dtype=dtype)
        self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, cfg.rms_norm_eps, dtype)
        self.q_b_proj = nn.Linear(cfg.q_lora_rank, h * cfg.qk_head_dim, bias=False, dtype=dtype)
        self.kv_a_proj_with_mqa = nn.Linear(d, self.kv_rank + self.rope, bias=bias, dtype=dtype)
        self.kv_a_layernorm = RMSNorm(self.kv_rank, cfg.rms_norm_eps, dtype)
        self.kv_b_proj = nn.Linear(
            self.kv_rank, h * (self.nope + self.v_dim), bias=False, dtype=dtype
        )
        self.o_proj = nn.Linear(h * self.v_dim, d, bias=bias, dtype=dtype)
        # IndexShare: shared layers own no indexer (and no indexer weights in the checkpoint)
        self.indexer = Indexer(cfg, dtype) if has_indexer else None

    def forward(
        self,
        x: Tensor,
        cis: Tensor,
        positions: Tensor,
        cache: LayerCache,
        prev_topk: Tensor | None,
        run_indexer: bool = True,
        x_proj: tuple[Tensor, Tensor, Tensor | None] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """x [B, S, D] (normalised) -> (out [B, S, D], top-k used [B, S, K]).

        Shared layers (no indexer) and ``run_indexer=False`` reuse ``prev_topk``. ``x_proj`` is
        (q_a_proj(x), kv_a_proj_with_mqa(x), indexer.wk(x) or None) when the caller computed
        them in one fused GEMM (the compiled decode step does, as the engines).
        """
        b, s, _ = x.shape
        h, c = self.n_heads, self.kv_rank
        run_indexer = run_indexer and self.indexer is not None
        if x_proj is None:
            wk_x = self.indexer.wk(x) if run_indexer else None
            x_proj = self.q_a_proj(x), self.kv_a_proj_with_mqa(x), wk_x
        q_a, kv_a, wk_x = x_proj
        latent, k_rope = kv_a.split([c, self.rope], -1)
        cq = self.q_a_layernorm(q_a)  # [B, S, Q], also the indexer's query input
        q = self.q_b_proj(cq).view(b, s, h, self.nope + self.rope)
        q_nope, q_rope = q.split([self.nope, self.rope], dim=-1)
        q_rope = apply_rope_interleaved(q_rope, cis)
        k_rope = apply_rope_interleaved(k_rope, cis)
        kv = cache.kv.append(torch.cat((self.kv_a_layernorm(latent), k_rope), -1))  # [B, T, C+R]

        if run_indexer:
            topk = self.indexer(x, cq, cis, positions, cache, wk_x)
        elif prev_topk is not None:
            topk = prev_topk
        else:
            raise ValueError("shared DSA layer needs the top-k of an earlier full indexer layer")

        # absorb kv_b_proj: per head w_kc [Dn, C] maps q_nope into latent space, w_vc [Dv, C] back
        w = self.kv_b_proj.weight.view(h, self.nope + self.v_dim, c)
        w_kc, w_vc = w[:, : self.nope], w[:, self.nope :]
        # [H, B*S, Dn] @ [H, Dn, C] -> q in latent space, per head
        q_lat = torch.matmul(q_nope.reshape(b * s, h, self.nope).transpose(0, 1), w_kc)
        q_all = torch.cat((q_lat.transpose(0, 1).view(b, s, h, c), q_rope), -1)  # [B, S, H, C+R]
        out = sparse_attention(q_all, kv, topk, positions, self.scale, c)  # [B, S, H, C]
        # [H, B*S, C] @ [H, C, Dv] -> back from latent space
        o = torch.matmul(out.view(b * s, h, c).transpose(0, 1), w_vc.transpose(1, 2))
        return self.o_proj(o.transpose(0, 1).reshape(b, s, h * self.v_dim)), topk


def sparse_attention(
    q: Tensor,
    kv: Tensor,
    topk: Tensor,
    positions: Tensor,
    scale: float,
    kv_rank: int,
    slots: Tensor | None = None,
) -> Tensor:
    """Absorbed MLA over the selected cache rows only.

    q [B, S, H, C+R] (latent-space nope | rope), kv [B, T, C+R] (latent | k_rope),
    topk [B, S, K] key positions, positions [S] -> latent outputs [B, S, H, C].
    With ``slots`` [T] (B = 1, a paged cache), key position j lives in row ``slots[j]`` of kv.
    """
    b, s, h, _ = q.shape
    t, width = kv.shape[1], kv.shape[2]
    out = torch.empty(b, s, h, kv_rank, dtype=q.dtype, device=q.device)
    flat_kv = kv.reshape(b * t, width)
    row_offset = (torch.arange(b, device=q.device) * t)[:, None, None]
    for rows in _chunks(s, topk.shape[-1] * width):
        idx = topk[:, rows]  # [B, s', K]
        kv_rows = slots[idx] if slots is not None else idx + row_offset
        # only the selected tokens are read: [B, s', K, C+R]
        sel = flat_kv.index_select(0, kv_rows.reshape(-1)).view(*idx.shape, width).to(q.dtype)
        scores = torch.matmul(q[:, rows], sel.transpose(-1, -2)) * scale  # [B, s', H, K]
        visible = idx <= positions[rows, None]  # causal: short rows pick masked keys
        scores = scores.masked_fill(~visible[:, :, None, :], -math.inf)
        p = scores.softmax(-1, dtype=torch.float32).to(q.dtype)
        out[:, rows] = torch.matmul(p, sel[..., :kv_rank])  # [B, s', H, C]
    return out

"""DSA sparse MLA: the lightning indexer and absorbed multi-head latent attention over top-k tokens.

As DeepSeek-V3.2-Exp ``inference/model.py`` (``Indexer``, ``MLA``) with GLM's deltas: interleaved
RoPE in both, IndexShare (shared layers own no indexer and reuse the previous full layer's top-k).
Attention gathers only the selected cache rows, so its cost grows with index_topk, not context.
Spec sections 3-6.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glm52_plugin.config import Glm52Config
from glm52_plugin.reference.cache import LayerCache
from glm52_plugin.reference.layers import FusedWeight, RMSNorm, apply_rope_interleaved

# Query rows per chunk: bounds the [rows, K, C] gather and the [rows, H_I, T] indexer scores.
_CHUNK_ELEMENTS = 1 << 24


def _chunks(n_queries: int, per_query: int) -> list[slice]:
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
        keys = cache.index_k.append(k).float()  # [B, T, D_I]
        weights = self.weights_proj(x.float()) * self.n_heads**-0.5  # [B, S, H_I]
        t = keys.shape[1]
        k_sel = min(self.topk, t)
        key_pos = torch.arange(t)
        out = torch.empty(b, s, k_sel, dtype=torch.long)
        scale = self.head_dim**-0.5
        for rows in _chunks(s, self.n_heads * t):
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
        self._x_proj = FusedWeight()  # q_a | kv_a (| indexer wk): one GEMM over x, as engines

    def forward(
        self,
        x: Tensor,
        cis: Tensor,
        positions: Tensor,
        cache: LayerCache,
        prev_topk: Tensor | None,
        run_indexer: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """x [B, S, D] (normalised) -> (out [B, S, D], top-k used [B, S, K]).

        Shared layers (no indexer) and ``run_indexer=False`` reuse ``prev_topk``.
        """
        b, s, _ = x.shape
        h, c = self.n_heads, self.kv_rank
        run_indexer = run_indexer and self.indexer is not None
        weights = [self.q_a_proj.weight, self.kv_a_proj_with_mqa.weight]
        if run_indexer:
            weights.append(self.indexer.wk.weight)
        proj = F.linear(x, self._x_proj.get(*weights))
        if self.q_a_proj.bias is not None:
            proj = proj + torch.cat([self.q_a_proj.bias, self.kv_a_proj_with_mqa.bias]
                                    + [proj.new_zeros(self.indexer.head_dim)] * run_indexer)  # fmt: skip
        q_a, latent, k_rope, wk_x = proj.split(
            [
                self.q_a_proj.out_features,
                c,
                self.rope,
                proj.shape[-1] - self.q_a_proj.out_features - c - self.rope,
            ],
            -1,
        )
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
        out = torch.empty(b, s, h, c, dtype=x.dtype)
        t, width = kv.shape[1], kv.shape[2]
        flat_kv = kv.reshape(b * t, width)
        row_offset = (torch.arange(b) * t)[:, None, None]
        for rows in _chunks(s, topk.shape[-1] * (c + self.rope)):
            idx = topk[:, rows]  # [B, s', K]
            # only the selected tokens are read: [B, s', K, C+R]
            sel = flat_kv.index_select(0, (idx + row_offset).view(-1)).view(*idx.shape, width)
            scores = torch.matmul(q_all[:, rows], sel.transpose(-1, -2)) * self.scale  # [B,s',H,K]
            visible = idx <= positions[rows, None]  # causal: short rows pick masked keys
            scores = scores.masked_fill(~visible[:, :, None, :], -math.inf)
            p = scores.softmax(-1, dtype=torch.float32).to(x.dtype)
            out[:, rows] = torch.matmul(p, sel[..., :c])  # [B, s', H, C]
        # [H, B*S, C] @ [H, C, Dv] -> back from latent space
        o = torch.matmul(out.view(b * s, h, c).transpose(0, 1), w_vc.transpose(1, 2))
        return self.o_proj(o.transpose(0, 1).reshape(b, s, h * self.v_dim)), topk

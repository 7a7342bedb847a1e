"""The CPU path's attention: vLLM's DeepseekV2MLAAttention projections + our DSA over its paged cache.

``GlmDsaAttention`` is vLLM's ``DeepseekV2MLAAttention`` (fused q_a/kv_a, norms, q_b, kv_b,
o_proj and the inner ``MLAAttention`` that owns the paged latent cache), built from a DSA-free
twin of the config because vLLM's CPU platform rejects sparse attention, with our ``forward``:
projections and cache writes as vLLM, the indexer (full layers only), sparse attention from
``sparse_mla``, and the top-k as an explicit ``Selection`` that a full layer returns and the
IndexShare layers after it are given (``decoder`` threads it). Weights keep the checkpoint's
names.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from vllm.model_executor.models.deepseek_v2 import DeepseekV2MLAAttention

from glm52_plugin.config import Glm52Config
from glm52_plugin.reference.layers import Indexer
from glm52_plugin.vllm import cpu_dsa
from glm52_plugin.vllm.absorb import Absorb
from glm52_plugin.vllm.cpu_gemm import EngineLinear
from glm52_plugin.vllm.rope import InterleavedRope
from glm52_plugin.vllm.sparse_mla import EagerBatch, FusedBatch, MtpTopkShare, write_slots


def _layer_metadata(layer_name: str) -> object | None:
    from vllm.forward_context import get_forward_context

    metadata = get_forward_context().attn_metadata
    if isinstance(metadata, list):  # micro-batching: one dict per ubatch
        metadata = metadata[0] if metadata else None
    if isinstance(metadata, dict):
        return metadata.get(layer_name)
    return metadata


def _log_info(message: str) -> None:
    from glm52_plugin.vllm.plugin import _log

    _log(logging.INFO, message)


@functools.cache  # once per process and path (every layer reports it)
def _log_dsa_path(fused: bool) -> None:
    if fused:
        _log_info("glm52_plugin: CPU DSA through the fused C++ kernels (glm52_plugin/vllm/csrc)")
    else:
        reason = cpu_dsa.build_error().split("\n", 1)[0] or f"{cpu_dsa.ENV_SWITCH}=0"
        _log_info(f"glm52_plugin: CPU DSA through eager torch ops ({reason})")


def _skip_kernel_weight_packing(act_dtype: torch.dtype) -> None:
    del act_dtype


@dataclass(frozen=True)
class Selection:
    """A full layer's top-k for the current forward, handed to the IndexShare layers after it.

    ``batch`` is the forward's batch layout (built once per full layer, so shared layers skip it)
    and ``topk`` the full layer's selection in that batch's form.
    """

    batch: EagerBatch | FusedBatch
    topk: object


class GlmDsaAttention(DeepseekV2MLAAttention):
    """vLLM's DeepseekV2MLAAttention (projections, paged latent cache) with our DSA forward.

    Built by ``decoder.GlmDsaDecoderLayer`` in place of its base; ``layer`` decides whether it
    owns an indexer (full layer) or reuses the selection it is given (IndexShare layer), and
    ``rope`` is the model's one interleaved rotary (its tables shared by all layers).
    """

    def __init__(
        self, *, glm_config: Glm52Config, layer: int, rope: InterleavedRope, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        dtype = self.kv_b_proj.weight.dtype
        self.glm_rope = rope
        # built (once per process) here, at model construction, not in a forward
        self.glm_kernels = cpu_dsa.kernels(announce=_log_info)
        _log_dsa_path(self.glm_kernels is not None)
        self.glm_index_rows: Tensor | None = None
        # index_share_for_mtp_iteration (the MTP layer's attention only, see ``MtpTopkShare``)
        self.glm_topk_share: MtpTopkShare | None = None
        self.glm_absorb: Absorb | None = None  # built on first use, see _absorb
        # checkpoint names: model.layers.{i}.self_attn.indexer.{wq_b,wk,k_norm,weights_proj}
        self.indexer = Indexer(glm_config, dtype) if glm_config.has_indexer(layer) else None
        if self.indexer is not None:
            self.indexer.weights_proj.float()  # fp32 head weights, as the reference
            self.glm_wq_b = EngineLinear(self.indexer.wq_b)
            self.glm_wk = EngineLinear(self.indexer.wk)
        # Our forward does all MLA math itself and never calls vLLM's MLA kernels, so skip their
        # weight post-processing: on x86 hosts with AMX vLLM picks AMX_MLA, which packs W_UK/W_UV
        # (rejecting fp32 weights) and then swaps kv_b_proj.weight, which we read, for an empty
        # one. vLLM's loader calls it on the inner MLAAttention (model_loader/utils.py,
        # process_weights_after_loading), which our base builds in its constructor.
        self.mla_attn.mla_attn.process_weights_after_loading = _skip_kernel_weight_packing

    def _index_rows(self, num_slots: int, device: torch.device) -> Tensor:
        # The indexer key cache shares the latent cache's slot numbering; it is owned by this
        # module (vLLM's memory planner does not see it: 256 B/token/full layer in bf16).
        if self.glm_index_rows is None or self.glm_index_rows.shape[0] != num_slots:
            self.glm_index_rows = torch.zeros(
                num_slots, self.indexer.head_dim, dtype=self.kv_b_proj.weight.dtype, device=device
            )
        return self.glm_index_rows

    def _absorb(self) -> Absorb:
        weight = self.kv_b_proj.weight
        if self.glm_absorb is None or not self.glm_absorb.is_current(weight):
            self.glm_absorb = Absorb(
                weight, self.num_local_heads, self.qk_nope_head_dim, self.v_head_dim
            )
        return self.glm_absorb

    def forward(
        self,
        positions: Tensor,
        hidden_states: Tensor,
        llama_4_scaling: Tensor | None = None,
        selection: Selection | None = None,
    ) -> tuple[Tensor, Selection | None]:
        """Attention output, and the selection the next IndexShare layers reuse: this layer's
        own for a full layer, else ``selection`` (the latest full layer's) passed through."""
        t = hidden_states.shape[0]
        h, nope, rope = self.num_local_heads, self.qk_nope_head_dim, self.qk_rope_head_dim
        c = self.kv_lora_rank
        qkv = self.fused_qkv_a_proj(hidden_states)[0]
        q_c, kv_lora = qkv.split([self.q_lora_rank, c + rope], dim=-1)
        q_c = self.q_a_layernorm(q_c)
        q = self.q_b_proj(q_c)[0].view(t, h, nope + rope)
        kv_c, k_pe = kv_lora.split([c, rope], dim=-1)
        q_nope, q_pe = q.split([nope, rope], dim=-1)
        q_pe, k_pe = self.glm_rope.rotate(positions, q_pe, k_pe.unsqueeze(1))
        q_pe = q_pe.to(q.dtype)  # rounded as the reference rounds its rotated q_rope
        latent = torch.cat((self.kv_a_layernorm(kv_c), k_pe.squeeze(1).to(kv_c.dtype)), -1)

        absorb = self._absorb()
        q_lat = absorb.to_latent(q_nope)  # [T, H, C]
        q_all = torch.cat((q_lat, q_pe.to(q_lat.dtype)), -1).float()  # attention runs in fp32
        out = torch.zeros(t, h, c, dtype=torch.float32, device=q_all.device)

        inner = self.mla_attn.mla_attn
        metadata = _layer_metadata(inner.layer_name)
        if metadata is not None and inner.kv_cache.numel() > 0:
            rows = inner.kv_cache.view(-1, c + rope)
            write_slots(rows, metadata.slot_mapping, latent)
            if self.indexer is not None:
                # a forward's first DSA layer is always full, so this rebuilds every step
                block_size = inner.kv_cache.shape[1]
                if self.glm_kernels is not None:
                    batch = FusedBatch(self.glm_kernels, metadata, positions, block_size)
                else:
                    batch = EagerBatch(metadata, positions, block_size)
                share = self.glm_topk_share
                reused = share.reused_rows(metadata, t) if share is not None else None
                if reused is not None:
                    topk = batch.from_rows(reused)
                else:
                    topk = self._run_indexer(
                        hidden_states, q_c, positions, metadata, rows.shape[0], batch
                    )
                    if share is not None:
                        share.keep(batch.rows(topk, t))
                selection = Selection(batch, topk)
            elif selection is None:
                raise RuntimeError("IndexShare: shared layer ran before any full indexer layer")
            selection.batch.attend(out, q_all, rows, selection.topk, self.scaling, c)
        o = absorb.from_latent(out, hidden_states.dtype)
        return self.o_proj(o.reshape(t, h * self.v_head_dim))[0], selection

    def _run_indexer(
        self,
        x: Tensor,
        q_c: Tensor,
        positions: Tensor,
        metadata: object,
        num_slots: int,
        batch: EagerBatch | FusedBatch,
    ) -> object:
        idx = self.indexer
        q = self.glm_wq_b(q_c).view(x.shape[0], idx.n_heads, idx.head_dim)
        k = idx.k_norm(self.glm_wk(x))
        q, k = self.glm_rope.rotate(positions, q, k[:, None])  # first r dims of each head
        q, k = q.to(x.dtype), k[:, 0].to(x.dtype)
        index_rows = self._index_rows(num_slots, x.device)
        write_slots(index_rows, metadata.slot_mapping, k)
        weights = idx.weights_proj(x.float()) * idx.n_heads**-0.5
        scale = idx.head_dim**-0.5
        return batch.topk(q, weights, index_rows, idx.topk, scale)

"""GLM-5.2 deployment arithmetic: parameters, weight bytes per GPU, KV bytes per token, FLOPs.

Counts come from the checkpoint layout (``checkpoint.names``: the tensors of zai-org/GLM-5.2 and
nvidia/GLM-5.2-NVFP4); KV layouts and the engines' defaults from ``plan.kv``. Decode FLOPs: one
new token attending to ``context`` earlier ones, multiply-add = 2 FLOPs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

from glm52_plugin.checkpoint.names import TensorSpec
from glm52_plugin.checkpoint.names import expected_tensors as _expected_tensors
from glm52_plugin.config import Glm52Config
from glm52_plugin.plan.kv import INDEXER_K_BYTES, KV_BYTES

Precision = Literal["nvfp4", "bf16"]
NVFP4_BYTES_PER_PARAM = 0.5 + 1 / 16  # 4-bit code + one e4m3 scale per 16 values
# vLLM shards these by TP (heads / vocab / intermediate); the rest (q_a, kv_a, indexer, router,
# norms) is replicated on every rank.
_TP_SHARDED = (".q_b_proj.", ".kv_b_proj.", ".o_proj.", "embed_tokens", "lm_head",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "shared_experts", "eh_proj")  # fmt: skip


@functools.lru_cache(maxsize=4)
def expected_tensors(cfg: Glm52Config) -> dict[str, TensorSpec]:
    # ~300k specs for GLM-5.2: a plan reads them five times, so build them once per config
    return _expected_tensors(cfg)


@dataclass(frozen=True, slots=True)
class Params:
    main: int
    mtp: int
    routed_experts: int  # main + MTP
    per_layer: dict[str, int]  # one layer's MLA, indexer, expert and dense-FFN parameters


@functools.lru_cache(maxsize=4)
def count_params(cfg: Glm52Config) -> Params:
    specs = {k: v for k, v in expected_tensors(cfg).items() if not v.optional}
    mtp_prefix = f"model.layers.{cfg.mtp_layer_index}."
    n = {k: math.prod(v.shape) for k, v in specs.items()}
    mtp = sum(
        v for k, v in n.items() if cfg.mtp_layer_index is not None and k.startswith(mtp_prefix)
    )
    routed = sum(v for k, v in n.items() if ".mlp.experts." in k)
    layer0 = {
        k.removeprefix("model.layers.0."): v
        for k, v in n.items()
        if k.startswith("model.layers.0.")
    }
    moe = next(i for i in range(cfg.num_hidden_layers) if cfg.is_moe_layer(i))
    mla = sum(v for k, v in layer0.items() if k.startswith("self_attn.") and ".indexer." not in k)
    per_layer = {
        "mla": mla,
        "indexer": sum(v for k, v in layer0.items() if ".indexer." in k),
        "expert": n[f"model.layers.{moe}.mlp.experts.0.gate_proj.weight"] * 3,
        "dense_ffn": sum(v for k, v in layer0.items() if k.startswith("mlp.")),
    }
    return Params(sum(n.values()) - mtp, mtp, routed, per_layer)


@functools.lru_cache(maxsize=4)
def active_params(cfg: Glm52Config) -> int:
    """Parameters one main-model token multiplies (embedding lookup excluded, lm_head included;
    the indexer counted on the layers that run it)."""
    total = 0
    for name, spec in expected_tensors(cfg).items():
        if (
            spec.optional
            or not spec.linear
            or name.startswith(f"model.layers.{cfg.mtp_layer_index}.")
        ):
            continue
        if ".mlp.experts." in name and int(name.split(".")[5]) >= cfg.num_experts_per_tok:
            continue  # top-k of the routed experts are active
        total += math.prod(spec.shape)
    return total


def weight_bytes_per_gpu(cfg: Glm52Config, precision: Precision, tp: int, ep: int) -> float:
    """Bytes of weights on one GPU: routed experts split over EP ranks (or TP when ep == 1)."""
    total = 0.0
    for name, spec in expected_tensors(cfg).items():
        if spec.optional:
            continue
        n = math.prod(spec.shape)
        if ".mlp.experts." in name:
            # nvidia/GLM-5.2-NVFP4 keeps the MTP layer BF16 (its exclude list)
            mtp = name.startswith(f"model.layers.{cfg.mtp_layer_index}.")
            per = NVFP4_BYTES_PER_PARAM if precision == "nvfp4" and not mtp else 2.0
            total += n * per / (ep if ep > 1 else tp)
            continue
        size = 4 if "F32" in spec.dtypes and "BF16" not in spec.dtypes else 2
        total += n * size / (tp if any(s in name for s in _TP_SHARDED) else 1)
    return total


def kv_bytes_per_token(cfg: Glm52Config, kv_dtype: str, index_share: bool = True) -> int:
    """Latent cache on every layer (MTP included) + indexer keys on layers that run an indexer.
    MLA has one latent 'head', so every TP rank stores the whole thing."""
    layers = cfg.num_hidden_layers + (cfg.mtp_layer_index is not None)
    indexed = (len(cfg.full_layers) if index_share else cfg.num_hidden_layers) + (
        cfg.mtp_layer_index is not None
    )
    return layers * KV_BYTES[kv_dtype] + indexed * INDEXER_K_BYTES


@dataclass(frozen=True, slots=True)
class Flops:
    projections: float  # 2 x active parameters
    attention: float  # sparse MLA over min(topk, context) keys, absorbed form, all layers
    indexer: float  # indexer scores over the whole context on layers that run it

    @property
    def total(self) -> float:
        return self.projections + self.attention + self.indexer


def decode_flops(cfg: Glm52Config, context: int, index_share: bool = True) -> Flops:
    """Per-token decode FLOPs of the main model at ``context`` earlier tokens."""
    n_idx = len(cfg.full_layers) if index_share else cfg.num_hidden_layers
    proj = 2.0 * active_params(cfg)
    if not index_share:  # shared layers would carry (and multiply) their own indexer weights
        idx_params = count_params(cfg).per_layer["indexer"]
        proj += 2.0 * idx_params * (cfg.num_hidden_layers - len(cfg.full_layers))
    k = min(cfg.index_topk, context)
    c, r, h = cfg.kv_lora_rank, cfg.qk_rope_head_dim, cfg.num_attention_heads
    attention = 2.0 * h * k * ((c + r) + c) * cfg.num_hidden_layers  # q.[c|r] then p.c
    heads, d = cfg.index_n_heads, cfg.index_head_dim
    indexer = 2.0 * heads * context * (d + 1) * n_idx  # q_I.k_I per head, then weighted head sum
    return Flops(proj, attention, indexer)

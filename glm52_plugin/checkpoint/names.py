"""GLM-5.2 checkpoint tensor names, shapes, dtypes and module groups, derived from the config.

Written from spec ``architecture.md`` sections 8.1 and 9 (not from the reference model), so it
can check the reference and the toy writer independently. Reference-model names equal checkpoint
names; only the NVFP4 suffixes (``weight_scale``, ``weight_scale_2``, ``input_scale``) map.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from glm52_plugin.config import Glm52Config

NVFP4_SUFFIXES = ("weight_scale_2", "weight_scale", "input_scale")
# The parts without which an NVFP4 linear cannot be decoded (input_scale only matters to W4A4).
NVFP4_REQUIRED = ("weight", "weight_scale", "weight_scale_2")
# FP8 KV-cache scales ModelOpt may attach to attention; meaningful to engines only.
KV_SCALE_SUFFIXES = ("k_scale", "v_scale", "kv_scale")
# Stored fp32 in GLM-5.x checkpoints (everything else BF16 or NVFP4).
FP32_STORED = ("e_score_correction_bias",)
# Kept in fp32 whatever the compute dtype: transformers 5.x glm_moe_dsa
# ``_keep_in_fp32_modules_strict`` + ``_keep_in_fp32_modules``. The router weight is stored bf16
# and widened exactly; it is fp32 so that every router input is (vLLM routes glm_moe_dsa in fp32).
FP32_TENSORS = (*FP32_STORED, "mlp.gate.weight", "indexer.weights_proj.weight")
# Fused (engine) module -> its checkpoint shards; shards must share one precision.
FUSED_SHARDS = {
    "fused_qkv_a_proj": ("q_a_proj", "kv_a_proj_with_mqa"),
    "gate_up_proj": ("gate_proj", "up_proj"),
    "wk_weights_proj": ("wk", "weights_proj"),
}
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")
_INDEXER = re.compile(r"^model\.layers\.(\d+)\.self_attn\.indexer\.([^.]+)\.")
_ROUTED_EXPERT = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.\d+\.(?:gate|up|down)_proj$")


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One BF16-layout checkpoint tensor: shape, allowed dtypes (safetensors names), group."""

    shape: tuple[int, ...]
    dtypes: tuple[str, ...]
    group: str
    linear: bool  # a 2-D nn.Linear weight (the only kind ModelOpt quantizes)
    optional: bool = False


def layer_of(name: str) -> int | None:
    m = _LAYER.match(name)
    return int(m.group(1)) if m else None


def routed_expert_layer(module: str) -> int | None:
    """Layer of a routed-expert linear (``model.layers.{i}.mlp.experts.{e}.{gate,up,down}_proj``,
    the MTP layer's included), else None: the modules ModelOpt quantizes to NVFP4."""
    m = _ROUTED_EXPERT.match(module)
    return int(m.group(1)) if m else None


def keeps_fp32(name: str) -> bool:
    """Whether the model keeps tensor ``name`` in fp32 whatever its compute dtype."""
    return name.endswith(FP32_TENSORS)


def nvfp4_part(name: str, uint8: bool) -> tuple[str, str] | None:
    """(module, part) of one tensor of a ModelOpt NVFP4 linear, else None: ``X.weight`` holding
    packed codes (``uint8``: its stored dtype is uint8) -> (``X``, ``weight``); ``X.weight_scale``,
    ``X.weight_scale_2``, ``X.input_scale`` -> (``X``, suffix). The one rule every reader of NVFP4
    tensors (checkpoint reader, header validation, the vLLM weight stream) groups parts by."""
    for part in NVFP4_SUFFIXES:
        if name.endswith("." + part):
            return name[: -len(part) - 1], part
    if uint8 and name.endswith(".weight"):
        return name[: -len(".weight")], "weight"
    return None


def is_kv_scale(name: str) -> bool:
    return name.endswith(tuple("." + s for s in KV_SCALE_SUFFIXES))


def indexer_layer(name: str) -> tuple[int, str] | None:
    """(layer, module) of an indexer tensor name: ``...layers.3.self_attn.indexer.wk.weight`` ->
    (3, 'wk'); None for any other name."""
    m = _INDEXER.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


def is_shared_indexer(name: str, cfg: Glm52Config) -> bool:
    """Whether ``name`` is an indexer tensor of a decoder layer that builds no indexer (an
    IndexShare "shared" layer): checkpoints exported without IndexShare pruning carry them, and
    every loader ignores them. The MTP layer always builds an indexer."""
    hit = indexer_layer(name)
    return hit is not None and hit[0] < cfg.num_hidden_layers and not cfg.has_indexer(hit[0])


# (name prefix within a layer, group), first match wins: more specific prefixes come first
_LAYER_GROUPS = (
    ("self_attn.indexer.", "indexer"),
    ("self_attn.", "attention (MLA)"),
    ("mlp.experts.", "routed experts"),
    ("mlp.shared_experts.", "shared experts"),
    ("mlp.gate", "router"),
    ("mlp.", "dense FFN"),
)


def _group(layer: int, cfg: Glm52Config, rest: str) -> str:
    if layer == cfg.mtp_layer_index:
        return "MTP layer"
    return next((group for prefix, group in _LAYER_GROUPS if rest.startswith(prefix)), "norms")


def _layer(cfg: Glm52Config, i: int) -> dict[str, tuple[tuple[int, ...], bool]]:
    """Suffix -> (shape, is_linear) for decoder layer i (MTP included)."""
    h, bf = cfg.hidden_size, cfg.num_attention_heads
    t: dict[str, tuple[tuple[int, ...], bool]] = {
        "input_layernorm.weight": ((h,), False),
        "post_attention_layernorm.weight": ((h,), False),
        "self_attn.q_a_proj.weight": ((cfg.q_lora_rank, h), True),
        "self_attn.q_a_layernorm.weight": ((cfg.q_lora_rank,), False),
        "self_attn.q_b_proj.weight": ((bf * cfg.qk_head_dim, cfg.q_lora_rank), True),
        "self_attn.kv_a_proj_with_mqa.weight": ((cfg.kv_lora_rank + cfg.qk_rope_head_dim, h), True),
        "self_attn.kv_a_layernorm.weight": ((cfg.kv_lora_rank,), False),
        "self_attn.kv_b_proj.weight": (
            (bf * (cfg.qk_nope_head_dim + cfg.v_head_dim), cfg.kv_lora_rank),
            True,
        ),
        "self_attn.o_proj.weight": ((h, bf * cfg.v_head_dim), True),
    }
    if cfg.has_indexer(i):
        n, d = cfg.index_n_heads, cfg.index_head_dim
        t["self_attn.indexer.wq_b.weight"] = ((n * d, cfg.q_lora_rank), True)
        t["self_attn.indexer.wk.weight"] = ((d, h), True)
        t["self_attn.indexer.k_norm.weight"] = ((d,), False)
        t["self_attn.indexer.k_norm.bias"] = ((d,), False)
        t["self_attn.indexer.weights_proj.weight"] = ((n, h), True)
    if cfg.is_moe_layer(i):
        e, m = cfg.n_routed_experts, cfg.moe_intermediate_size
        t["mlp.gate.weight"] = ((e, h), True)
        t["mlp.gate.e_score_correction_bias"] = ((e,), False)
        for x in range(e):
            t[f"mlp.experts.{x}.gate_proj.weight"] = ((m, h), True)
            t[f"mlp.experts.{x}.up_proj.weight"] = ((m, h), True)
            t[f"mlp.experts.{x}.down_proj.weight"] = ((h, m), True)
        s = m * cfg.n_shared_experts
        if s:
            t["mlp.shared_experts.gate_proj.weight"] = ((s, h), True)
            t["mlp.shared_experts.up_proj.weight"] = ((s, h), True)
            t["mlp.shared_experts.down_proj.weight"] = ((h, s), True)
    else:
        f = cfg.intermediate_size
        t["mlp.gate_proj.weight"] = ((f, h), True)
        t["mlp.up_proj.weight"] = ((f, h), True)
        t["mlp.down_proj.weight"] = ((h, f), True)
    return t


def _dtypes(name: str) -> tuple[str, ...]:
    if name.endswith(FP32_STORED):
        return ("F32",)
    if ".indexer.weights_proj." in name or ".indexer.k_norm." in name:
        return ("BF16", "F32")  # stored dtype UNCONFIRMED (spec 9); GLM-5.1 derivatives: bf16/fp32
    return ("BF16",)


def expected_tensors(cfg: Glm52Config) -> dict[str, TensorSpec]:
    """Every tensor of the BF16 checkpoint, in model order (spec section 9 and 8.1)."""
    h, v = cfg.hidden_size, cfg.vocab_size
    out: dict[str, TensorSpec] = {
        "model.embed_tokens.weight": TensorSpec((v, h), ("BF16",), "embeddings", False)
    }
    n_layers = cfg.num_hidden_layers + (1 if cfg.mtp_layer_index is not None else 0)
    for i in range(n_layers):
        for rest, (shape, linear) in _layer(cfg, i).items():
            name = f"model.layers.{i}.{rest}"
            out[name] = TensorSpec(shape, _dtypes(name), _group(i, cfg, rest), linear)
    mtp = cfg.mtp_layer_index
    if mtp is not None:
        p = f"model.layers.{mtp}."
        for rest, shape in (("enorm.weight", (h,)), ("hnorm.weight", (h,)),
                            ("shared_head.norm.weight", (h,)), ("eh_proj.weight", (h, 2 * h))):  # fmt: skip
            out[p + rest] = TensorSpec(shape, ("BF16",), "MTP layer", rest == "eh_proj.weight")
        # engines bind the main embedding / lm_head when these copies are absent (spec 8.1)
        out[p + "embed_tokens.weight"] = TensorSpec((v, h), ("BF16",), "MTP layer", False, True)
        out[p + "shared_head.head.weight"] = TensorSpec((v, h), ("BF16",), "MTP layer", True, True)
    out["model.norm.weight"] = TensorSpec((h,), ("BF16",), "norms", False)
    out["lm_head.weight"] = TensorSpec((v, h), ("BF16",), "lm_head", True)
    return out


def fused_partner(module: str) -> str | None:
    """The other shard of ``module``'s fused engine layer (``...q_a_proj`` -> ``...kv_a_...``)."""
    head, _, leaf = module.rpartition(".")
    for a, b in FUSED_SHARDS.values():
        if leaf == a:
            return f"{head}.{b}"
        if leaf == b:
            return f"{head}.{a}"
    return None

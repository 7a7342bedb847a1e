"""Parsing and validation of a HF config.json dict into ``Glm52Config`` (every error names its field)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from glm52_plugin.config import (
    ATTENTION_LAYER_TYPES,
    SUPPORTED_ROPE_TYPES,
    ConfigError,
    RopeParameters,
    resolve_indexer_types,
)

if TYPE_CHECKING:
    from glm52_plugin.config import Glm52Config

_POSITIVE_INTS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "max_position_embeddings",
    "num_attention_heads", "num_key_value_heads", "q_lora_rank", "kv_lora_rank",
    "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "index_topk", "index_n_heads",
    "index_head_dim", "intermediate_size", "moe_intermediate_size", "n_routed_experts",
    "num_experts_per_tok", "n_group", "topk_group", "moe_layer_freq",
)  # fmt: skip
_NON_NEGATIVE_INTS = ("num_nextn_predict_layers", "n_shared_experts", "first_k_dense_replace")
_BOOLS = (
    "tie_word_embeddings", "attention_bias", "rope_interleave", "indexer_rope_interleave",
    "index_share_for_mtp_iteration", "norm_topk_prob",
)  # fmt: skip
_POSITIVE_FLOATS = ("routed_scaling_factor", "rms_norm_eps")
_CHOICES = {
    "scoring_func": ("sigmoid",),
    "topk_method": ("noaux_tc",),
    "hidden_act": ("silu",),
    "model_type": ("glm_moe_dsa",),
}


def _int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{name}: expected an integer, got {type(v).__name__} {v!r}")
    return v


def _float(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{name}: expected a number, got {type(v).__name__} {v!r}")
    return float(v)


def _rope(d: Mapping[str, Any]) -> RopeParameters:
    # transformers 5 writes rope_parameters={rope_type, rope_theta, ...}; older files have a top-level
    # rope_theta plus an optional rope_scaling dict ("type" in very old ones).
    params = d.get("rope_parameters")
    name = "rope_parameters"
    if params is None:
        params = dict(d.get("rope_scaling") or {})
        name = "rope_scaling"
        if "rope_theta" in d:
            params.setdefault("rope_theta", d["rope_theta"])
    if not isinstance(params, Mapping):
        raise ConfigError(f"{name}: expected an object, got {type(params).__name__}")
    params = dict(params)
    if "type" in params and "rope_type" not in params:
        params["rope_type"] = params.pop("type")
    rope_type = params.get("rope_type", "default")
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ConfigError(
            f"{name}.rope_type: unknown RoPE scaling type {rope_type!r} "
            f"(supported: {', '.join(SUPPORTED_ROPE_TYPES)})"
        )
    theta = params.get("rope_theta", d.get("rope_theta", 10000.0))
    kw: dict[str, Any] = {"rope_type": rope_type, "rope_theta": _float(f"{name}.rope_theta", theta)}
    if kw["rope_theta"] <= 0:
        raise ConfigError(f"{name}.rope_theta: must be > 0, got {theta}")
    if rope_type == "yarn":
        for key in ("factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim"):
            if params.get(key) is not None:
                kw[key] = _float(f"{name}.{key}", params[key])
        if params.get("attention_factor") is not None:
            kw["attention_factor"] = _float(f"{name}.attention_factor", params["attention_factor"])
        omp = params.get("original_max_position_embeddings")
        if omp is None:
            raise ConfigError(f"{name}.original_max_position_embeddings: required for yarn")
        kw["original_max_position_embeddings"] = _int(
            f"{name}.original_max_position_embeddings", omp
        )
        kw["truncate"] = bool(params.get("truncate", True))
    return RopeParameters(**kw)


def parse_config_dict(cls: type[Glm52Config], d: Mapping[str, Any]) -> Glm52Config:
    if not isinstance(d, Mapping):
        raise ConfigError(f"config: expected a JSON object, got {type(d).__name__}")
    for key, allowed in _CHOICES.items():
        if key in d and d[key] not in allowed:
            raise ConfigError(f"{key}: {d[key]!r} is not supported (expected one of {allowed})")
    known = {f.name for f in dataclasses.fields(cls)}
    kw: dict[str, Any] = {}
    for name in known & d.keys():
        v = d[name]
        if v is None and name in ("index_topk_freq", "index_skip_topk_offset", "index_topk_pattern",
                                  "indexer_types", "mlp_layer_types", "pad_token_id",
                                  "bos_token_id", "rope_parameters"):  # fmt: skip
            continue
        kw[name] = v
    if "num_experts" in d and "n_routed_experts" not in d:  # transformers BC alias
        kw["n_routed_experts"] = d["num_experts"]
    if "num_local_experts" in d and "n_routed_experts" not in d:
        kw["n_routed_experts"] = d["num_local_experts"]
    if "torch_dtype" in d and "dtype" not in d:
        kw["dtype"] = d["torch_dtype"]

    for name in _POSITIVE_INTS:
        if name in kw and _int(name, kw[name]) <= 0:
            raise ConfigError(f"{name}: must be > 0, got {kw[name]}")
    for name in _NON_NEGATIVE_INTS:
        if name in kw and _int(name, kw[name]) < 0:
            raise ConfigError(f"{name}: must be >= 0, got {kw[name]}")
    for name in _BOOLS:
        if name in kw and not isinstance(kw[name], bool):
            raise ConfigError(f"{name}: expected true/false, got {kw[name]!r}")
    for name in _POSITIVE_FLOATS:
        if name in kw and _float(name, kw[name]) <= 0:
            raise ConfigError(f"{name}: must be > 0, got {kw[name]}")
        if name in kw:
            kw[name] = float(kw[name])
    for name in ("index_topk_freq", "index_skip_topk_offset", "pad_token_id", "bos_token_id"):
        if name in kw:
            _int(name, kw[name])
    for name in ("scoring_func", "topk_method", "hidden_act", "dtype"):
        if name in kw and not isinstance(kw[name], str):
            raise ConfigError(f"{name}: expected a string, got {kw[name]!r}")

    eos = kw.get("eos_token_id", (1,))
    eos = [eos] if isinstance(eos, int) and not isinstance(eos, bool) else eos
    if not isinstance(eos, (list, tuple)) or not eos:
        raise ConfigError(f"eos_token_id: expected an integer or a list of integers, got {eos!r}")
    kw["eos_token_id"] = tuple(_int(f"eos_token_id[{i}]", e) for i, e in enumerate(eos))

    kw["rope_parameters"] = _rope(d)
    pattern = kw.get("index_topk_pattern")
    if pattern is not None and not isinstance(pattern, str):
        if not isinstance(pattern, (list, tuple)):
            raise ConfigError(f"index_topk_pattern: expected a string or a list, got {pattern!r}")
        kw["index_topk_pattern"] = tuple(pattern)
    if "indexer_types" in kw and not isinstance(kw["indexer_types"], (list, tuple)):
        raise ConfigError(f"indexer_types: expected a list, got {kw['indexer_types']!r}")

    layers = kw.get("num_hidden_layers", 78)
    kw["indexer_types"] = resolve_indexer_types(
        layers,
        kw.get("indexer_types"),
        kw.get("index_topk_pattern"),
        kw.get("index_topk_freq"),
        kw.get("index_skip_topk_offset"),
    )
    kw["mlp_layer_types"] = _mlp_layer_types(kw, layers)
    _check_layer_types(d.get("layer_types"), layers)

    cfg = cls(**kw)
    _check_consistency(cfg)
    return cfg


def _mlp_layer_types(kw: dict[str, Any], layers: int) -> tuple[str, ...]:
    given = kw.get("mlp_layer_types")
    if given is None:
        first_dense = kw.get("first_k_dense_replace", 3)
        freq = kw.get("moe_layer_freq", 1)
        return tuple(
            "sparse" if i >= first_dense and i % freq == 0 else "dense" for i in range(layers)
        )
    if not isinstance(given, (list, tuple)) or len(given) != layers:
        raise ConfigError(f"mlp_layer_types: expected a list of {layers} entries, got {given!r}")
    for i, t in enumerate(given):
        if t not in ("dense", "sparse"):
            raise ConfigError(f"mlp_layer_types[{i}]: {t!r} is not 'dense' or 'sparse'")
    return tuple(given)


def _check_layer_types(layer_types: Any, layers: int) -> None:
    if layer_types is None:
        return
    if not isinstance(layer_types, (list, tuple)) or len(layer_types) != layers:
        raise ConfigError(f"layer_types: expected a list of {layers} entries")
    for i, t in enumerate(layer_types):
        if t not in ATTENTION_LAYER_TYPES:
            raise ConfigError(
                f"layer_types[{i}]: {t!r} is not an attention type of this model "
                f"(expected one of {ATTENTION_LAYER_TYPES})"
            )


def _check_consistency(c: Glm52Config) -> None:
    if c.num_attention_heads % c.num_key_value_heads:
        raise ConfigError(
            f"num_key_value_heads: {c.num_key_value_heads} does not divide "
            f"num_attention_heads {c.num_attention_heads}"
        )
    if c.qk_rope_head_dim % 2:
        raise ConfigError(
            f"qk_rope_head_dim: must be even for RoPE pairs, got {c.qk_rope_head_dim}"
        )
    if c.index_head_dim < c.qk_rope_head_dim:
        raise ConfigError(
            f"index_head_dim: {c.index_head_dim} is smaller than its RoPE part "
            f"qk_rope_head_dim {c.qk_rope_head_dim}"
        )
    if c.n_routed_experts % c.n_group:
        raise ConfigError(
            f"n_group: {c.n_group} does not divide n_routed_experts {c.n_routed_experts}"
        )
    if c.topk_group > c.n_group:
        raise ConfigError(f"topk_group: {c.topk_group} exceeds n_group {c.n_group}")
    if c.num_experts_per_tok > c.n_routed_experts:
        raise ConfigError(
            f"num_experts_per_tok: {c.num_experts_per_tok} exceeds n_routed_experts "
            f"{c.n_routed_experts}"
        )
    if c.n_group > 1 and c.n_routed_experts // c.n_group < 2:
        raise ConfigError("n_group: each expert group needs at least 2 experts (top-2 group score)")
    if c.num_nextn_predict_layers > 1:
        raise ConfigError(
            f"num_nextn_predict_layers: {c.num_nextn_predict_layers} MTP layers are not supported; "
            "GLM-5.x has one, applied recursively"
        )
    for name in ("pad_token_id", "bos_token_id"):
        v = getattr(c, name)
        if v is not None and not 0 <= v < c.vocab_size:
            raise ConfigError(f"{name}: {v} is outside the vocabulary (vocab_size {c.vocab_size})")
    for i, e in enumerate(c.eos_token_id):
        if not 0 <= e < c.vocab_size:
            raise ConfigError(f"eos_token_id[{i}]: {e} is outside the vocabulary")

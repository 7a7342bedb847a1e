"""Validation and parsing rules of GLM-5.2's config (every error names its field). A leaf module.

``glm52_plugin.config`` builds on it: ``Glm52Config.from_dict`` turns a config.json dict into
constructor arguments here (:func:`parse_fields`), and ``Glm52Config.__post_init__`` checks the
values (:func:`check_values`, :func:`check_consistency`) and derives the per-layer schedules
(:func:`resolve_indexer_types`, :func:`mlp_layer_types`), so a config made by ``from_dict``, by
``Glm52Config(...)`` or by ``dataclasses.replace`` is checked and derived the same way.
This module imports nothing from the package.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

SUPPORTED_ROPE_TYPES = ("default", "yarn")
# transformers <= 5.22 wrote "deepseek_sparse_attention"; 5.23 maps it to "indexed_attention".
ATTENTION_LAYER_TYPES = ("indexed_attention", "deepseek_sparse_attention")
# Fields transformers' own GlmMoeDsaConfig does not know, so a config it writes (e.g. after
# ``GlmMoeDsaForCausalLM(GlmMoeDsaConfig(...)).save_pretrained``) omits them. Where config.json is
# silent they take GLM-5.2's values (the dataclass defaults); ``Glm52Config.filled_fields`` says
# which were filled. num_nextn_predict_layers is then settled by the checkpoint's tensors
# (``checkpoint.validate.resolve_mtp``).
GLM52_FILLS = (
    "num_nextn_predict_layers", "topk_method", "scoring_func", "rope_interleave",
    "indexer_rope_interleave", "moe_layer_freq", "index_share_for_mtp_iteration",
)  # fmt: skip

_POSITIVE_INTS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "max_position_embeddings",
    "num_attention_heads", "num_key_value_heads", "q_lora_rank", "kv_lora_rank",
    "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "index_topk", "index_n_heads",
    "index_head_dim", "intermediate_size", "moe_intermediate_size", "n_routed_experts",
    "num_experts_per_tok", "n_group", "topk_group", "moe_layer_freq",
)  # fmt: skip
_NON_NEGATIVE_INTS = ("num_nextn_predict_layers", "n_shared_experts", "first_k_dense_replace")
_OPTIONAL_INTS = ("index_topk_freq", "index_skip_topk_offset", "pad_token_id", "bos_token_id")
_BOOLS = (
    "tie_word_embeddings", "attention_bias", "rope_interleave", "indexer_rope_interleave",
    "index_share_for_mtp_iteration", "norm_topk_prob",
)  # fmt: skip
_POSITIVE_FLOATS = ("routed_scaling_factor", "rms_norm_eps")
_CHOICES = {
    "scoring_func": ("sigmoid",),
    "topk_method": ("noaux_tc",),
    "hidden_act": ("silu",),
}
# JSON nulls that mean "not given" for these keys
_NULL_MEANS_ABSENT = (
    "index_topk_freq", "index_skip_topk_offset", "index_topk_pattern", "indexer_types",
    "mlp_layer_types", "pad_token_id", "bos_token_id", "rope_parameters",
)  # fmt: skip


class ConfigError(ValueError):
    """A config.json value is missing, mistyped or inconsistent; the message names the field."""


def _int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{name}: expected an integer, got {type(v).__name__} {v!r}")
    return v


def _float(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{name}: expected a number, got {type(v).__name__} {v!r}")
    return float(v)


# ---- schedules ---------------------------------------------------------------------------------
def indexer_pattern(indexer_types: Sequence[str]) -> str:
    """Per-layer "full"/"shared" as one "F"/"S" character each, the ``index_topk_pattern`` form
    that transformers, vLLM and SGLang read (``["full", "shared", "full"]`` -> ``"FSF"``)."""
    return "".join("F" if t == "full" else "S" for t in indexer_types)


def normalise_pattern(value: Any, source: str) -> str | None:
    """A declared schedule (an "F"/"S" string or a list of "full"/"shared") as an F/S string."""
    if value is None:
        return None
    if isinstance(value, str):
        bad = sorted(set(value) - {"F", "S"})
        if bad:
            raise ConfigError(f"{source}: characters {bad} are not 'F' or 'S'")
        return value
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{source}: expected a string or a list, got {value!r}")
    for i, t in enumerate(value):
        if t not in ("full", "shared"):
            raise ConfigError(f"{source}[{i}]: {t!r} is not 'full' or 'shared'")
    return indexer_pattern(value)


def resolve_indexer_types(
    num_layers: int,
    pattern: str | None,
    index_topk_freq: int | None = None,
    index_skip_topk_offset: int | None = None,
    source: str = "index_topk_pattern",
) -> tuple[str, ...]:
    """Per-layer "full"/"shared": a declared F/S ``pattern`` wins over freq/offset (the rule of
    transformers 5.23+ ``GlmMoeDsaConfig``): layer i is full iff
    ``max(i - offset + 1, 0) % freq == 0``, defaults freq 1, offset 2."""
    if pattern is not None:
        types = ["full" if c == "F" else "shared" for c in pattern]
    else:
        freq = max(index_topk_freq if index_topk_freq is not None else 1, 1)
        offset = 2 if index_skip_topk_offset is None else index_skip_topk_offset
        if offset < 0:
            raise ConfigError(f"index_skip_topk_offset: must be >= 0, got {offset}")
        types = [
            "full" if max(i - offset + 1, 0) % freq == 0 else "shared" for i in range(num_layers)
        ]
        source = "index_topk_freq/index_skip_topk_offset"
    if len(types) != num_layers:
        raise ConfigError(
            f"{source}: has {len(types)} entries but num_hidden_layers is {num_layers}"
        )
    if types and types[0] != "full":
        raise ConfigError(
            f"{source}: layer 0 is 'shared' but a shared layer needs an earlier full layer's top-k"
        )
    return tuple(types)


def mlp_layer_types(
    num_layers: int, first_k_dense_replace: int, moe_layer_freq: int
) -> tuple[str, ...]:
    """Per-layer "dense"/"sparse" as vLLM and SGLang build them (DeepSeek-V2 rule): MoE from
    layer ``first_k_dense_replace`` on, on every ``moe_layer_freq``-th layer."""
    return tuple(
        "sparse" if i >= first_k_dense_replace and i % moe_layer_freq == 0 else "dense"
        for i in range(num_layers)
    )


# ---- config.json -> constructor arguments ------------------------------------------------------
def parse_rope(d: Mapping[str, Any]) -> dict[str, Any]:
    """RopeParameters arguments from ``rope_parameters`` (transformers 5) or the older top-level
    ``rope_theta`` plus optional ``rope_scaling`` (``type`` in very old files)."""
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
    if not (kw["rope_theta"] > 0 and math.isfinite(kw["rope_theta"])):
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
    return kw


def parse_fields(d: Mapping[str, Any], fields: Collection[str]) -> dict[str, Any]:
    """Constructor arguments for ``Glm52Config`` from a config.json dict (``rope_parameters`` as
    the dict :func:`parse_rope` returns). Unknown keys are ignored; aliases and legacy layouts
    are mapped; a declared schedule (``indexer_types``, which wins, or ``index_topk_pattern``)
    becomes the F/S string ``index_topk_pattern``; GLM-5.2 values the dict omits are listed in
    ``filled_fields``."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"config: expected a JSON object, got {type(d).__name__}")
    if "model_type" in d and d["model_type"] != "glm_moe_dsa":
        raise ConfigError(
            f"model_type: {d['model_type']!r} is not supported (expected one of ('glm_moe_dsa',))"
        )
    present = {k for k, v in d.items() if not (v is None and k in _NULL_MEANS_ABSENT)}
    kw: dict[str, Any] = {k: d[k] for k in present & set(fields)}
    for alias in ("num_experts", "num_local_experts"):  # transformers BC aliases
        if alias in d and "n_routed_experts" not in d:
            kw["n_routed_experts"] = d[alias]
    if "torch_dtype" in d and "dtype" not in d:
        kw["dtype"] = d["torch_dtype"]
    eos = kw.get("eos_token_id", (1,))
    eos = [eos] if isinstance(eos, int) and not isinstance(eos, bool) else eos
    if not isinstance(eos, (list, tuple)) or not eos:
        raise ConfigError(f"eos_token_id: expected an integer or a list of integers, got {eos!r}")
    kw["eos_token_id"] = tuple(eos)
    kw["rope_parameters"] = parse_rope(d)

    layers = _int("num_hidden_layers", kw.get("num_hidden_layers", 78))
    if layers <= 0:
        raise ConfigError(f"num_hidden_layers: must be > 0, got {layers}")
    declared = "indexer_types" if "indexer_types" in present else "index_topk_pattern"
    kw.pop("indexer_types", None)
    pattern = normalise_pattern(d.get(declared), declared)
    if pattern is not None:
        resolve_indexer_types(layers, pattern, source=declared)  # errors name the declared key
    kw["index_topk_pattern"] = pattern
    if "mlp_layer_types" in present:
        _check_declared_mlp(kw, d["mlp_layer_types"], layers)
    kw.pop("mlp_layer_types", None)
    _check_layer_types(d.get("layer_types"), layers)
    kw["filled_fields"] = tuple(n for n in GLM52_FILLS if n not in present)
    return kw


def _check_declared_mlp(kw: Mapping[str, Any], given: Any, layers: int) -> None:
    """A declared ``mlp_layer_types`` must be what first_k_dense_replace / moe_layer_freq say:
    the engines build their layers from those two, transformers from the list."""
    if not isinstance(given, (list, tuple)) or len(given) != layers:
        raise ConfigError(f"mlp_layer_types: expected a list of {layers} entries, got {given!r}")
    for i, t in enumerate(given):
        if t not in ("dense", "sparse"):
            raise ConfigError(f"mlp_layer_types[{i}]: {t!r} is not 'dense' or 'sparse'")
    first = _int("first_k_dense_replace", kw.get("first_k_dense_replace", 3))
    freq = _int("moe_layer_freq", kw.get("moe_layer_freq", 1))
    if freq > 0 and tuple(given) != mlp_layer_types(layers, first, freq):
        raise ConfigError(
            f"mlp_layer_types: {list(given)} disagrees with first_k_dense_replace={first}, "
            f"moe_layer_freq={freq}, from which vLLM and SGLang build their layers"
        )


def _check_layer_types(layer_types: Any, layers: Any) -> None:
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


# ---- checks on a constructed config (duck-typed: any object with Glm52Config's fields) --------
def check_values(c: Any) -> dict[str, Any]:
    """Type and range of every field; returns normalised values to set (floats, tuples)."""
    fixed: dict[str, Any] = {}
    for name in _POSITIVE_INTS:
        if _int(name, getattr(c, name)) <= 0:
            raise ConfigError(f"{name}: must be > 0, got {getattr(c, name)}")
    for name in _NON_NEGATIVE_INTS:
        if _int(name, getattr(c, name)) < 0:
            raise ConfigError(f"{name}: must be >= 0, got {getattr(c, name)}")
    for name in _OPTIONAL_INTS:
        if getattr(c, name) is not None:
            _int(name, getattr(c, name))
    for name in _BOOLS:
        if not isinstance(getattr(c, name), bool):
            raise ConfigError(f"{name}: expected true/false, got {getattr(c, name)!r}")
    for name in _POSITIVE_FLOATS:
        v = _float(name, getattr(c, name))
        if not (v > 0 and math.isfinite(v)):
            raise ConfigError(f"{name}: must be > 0, got {getattr(c, name)}")
        fixed[name] = v
    for name, allowed in _CHOICES.items():
        if getattr(c, name) not in allowed:
            raise ConfigError(
                f"{name}: {getattr(c, name)!r} is not supported (expected one of {allowed})"
            )
    if not isinstance(c.dtype, str):
        raise ConfigError(f"dtype: expected a string, got {c.dtype!r}")
    eos = c.eos_token_id
    if not isinstance(eos, (list, tuple)) or not eos:
        raise ConfigError(f"eos_token_id: expected a list of integers, got {eos!r}")
    fixed["eos_token_id"] = tuple(_int(f"eos_token_id[{i}]", e) for i, e in enumerate(eos))
    fixed["index_topk_pattern"] = normalise_pattern(c.index_topk_pattern, "index_topk_pattern")
    return fixed


def check_consistency(c: Any) -> None:
    """Relations between fields (after the schedules are derived)."""
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

"""GLM-5.2 configuration: every field the model uses, parsed once from a HF ``config.json``.

Follows transformers 5.23 ``GlmMoeDsaConfig`` (field names, defaults, IndexShare derivation) and
accepts what any transformers 5.x wrote: top-level ``rope_theta``/``rope_scaling`` or
``rope_parameters``, the meaningless ``head_dim``, legacy ``layer_types`` values and a
``quantization_config``. Fields transformers' class does not know (``topk_method``,
``scoring_func``, ``rope_interleave``, ...: ``GLM52_FILLS``) take GLM-5.2's values where the file
is silent, and ``filled_fields`` records which did. Validation rules and errors live in
``glm52_plugin._config_parse``; every construction (``from_dict``, the constructor,
``dataclasses.replace``) is checked and its per-layer schedules derived in ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from glm52_plugin import _config_parse as _parse
from glm52_plugin._config_parse import (
    ATTENTION_LAYER_TYPES,
    GLM52_FILLS,
    SUPPORTED_ROPE_TYPES,
    ConfigError,
    indexer_pattern,
)

__all__ = [
    "ATTENTION_LAYER_TYPES",
    "GLM52_FILLS",
    "SUPPORTED_ROPE_TYPES",
    "ConfigError",
    "Glm52Config",
    "RopeParameters",
    "indexer_pattern",
    "yarn_mscale",
]

IndexerType = Literal["full", "shared"]


@dataclass(frozen=True, slots=True)
class RopeParameters:
    rope_type: str = "default"
    rope_theta: float = 10000.0
    # yarn only
    factor: float | None = None
    original_max_position_embeddings: int | None = None
    beta_fast: float | None = None
    beta_slow: float | None = None
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None
    truncate: bool = True


@dataclass(frozen=True, slots=True)
class Glm52Config:
    # vocabulary and depth
    vocab_size: int = 154880
    hidden_size: int = 6144
    num_hidden_layers: int = 78
    num_nextn_predict_layers: int = 1
    max_position_embeddings: int = 202752
    tie_word_embeddings: bool = False
    # mla
    num_attention_heads: int = 64
    num_key_value_heads: int = 64
    q_lora_rank: int = 2048
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 192
    qk_rope_head_dim: int = 64
    v_head_dim: int = 256
    attention_bias: bool = False
    rope_parameters: RopeParameters = field(default_factory=RopeParameters)
    rope_interleave: bool = True
    # dsa indexer and IndexShare
    index_topk: int = 2048
    index_n_heads: int = 32
    index_head_dim: int = 128
    indexer_rope_interleave: bool = True
    index_topk_freq: int | None = None
    index_skip_topk_offset: int | None = None
    # The declared per-layer schedule as an "F"/"S" string (config.json's explicit indexer_types
    # list, which wins, or its index_topk_pattern); None derives it from freq/offset.
    index_topk_pattern: str | None = None
    indexer_types: tuple[IndexerType, ...] = field(init=False)  # derived, one per decoder layer
    index_share_for_mtp_iteration: bool = True
    # ffn and moe
    intermediate_size: int = 12288
    moe_intermediate_size: int = 2048
    n_routed_experts: int = 256
    n_shared_experts: int = 1
    num_experts_per_tok: int = 8
    n_group: int = 1
    topk_group: int = 1
    first_k_dense_replace: int = 3
    moe_layer_freq: int = 1
    mlp_layer_types: tuple[Literal["dense", "sparse"], ...] = field(init=False)  # derived
    scoring_func: str = "sigmoid"
    topk_method: str = "noaux_tc"
    norm_topk_prob: bool = True
    routed_scaling_factor: float = 2.5
    hidden_act: str = "silu"
    # norms
    rms_norm_eps: float = 1e-5
    # tokens
    bos_token_id: int | None = 0
    eos_token_id: tuple[int, ...] = (1,)
    pad_token_id: int | None = None
    dtype: str = "bfloat16"
    # GLM52_FILLS the source config.json omitted (their GLM-5.2 values were used); not compared
    filled_fields: tuple[str, ...] = field(default=(), compare=False)
    # True when config.json declares (or the fill assumes) an MTP layer of which the checkpoint
    # holds no tensor at all (checkpoint.validate.resolve_mtp); num_nextn_predict_layers is then 0
    mtp_layer_absent: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        # the one place values are checked and schedules derived: from_dict, Glm52Config(...) and
        # dataclasses.replace all come through here
        if not isinstance(self.rope_parameters, RopeParameters):
            raise ConfigError(
                f"rope_parameters: expected RopeParameters, got {self.rope_parameters!r}"
            )
        for name, value in _parse.check_values(self).items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "filled_fields", tuple(self.filled_fields))
        object.__setattr__(
            self,
            "indexer_types",
            _parse.resolve_indexer_types(
                self.num_hidden_layers,
                self.index_topk_pattern,
                self.index_topk_freq,
                self.index_skip_topk_offset,
            ),
        )
        object.__setattr__(
            self,
            "mlp_layer_types",
            _parse.mlp_layer_types(
                self.num_hidden_layers, self.first_k_dense_replace, self.moe_layer_freq
            ),
        )
        _parse.check_consistency(self)

    # ---- derived -------------------------------------------------------------------------------
    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def indexer_pattern(self) -> str:
        """The resolved schedule as an ``index_topk_pattern`` string, "F" full / "S" shared per
        layer (what vLLM and SGLang read), e.g. ``"FS"`` for the 2-layer toy."""
        return indexer_pattern(self.indexer_types)

    @property
    def mtp_layer_index(self) -> int | None:
        """Checkpoint layer index of the MTP block (``num_hidden_layers``), None without MTP."""
        return self.num_hidden_layers if self.num_nextn_predict_layers > 0 else None

    @property
    def full_layers(self) -> tuple[int, ...]:
        return tuple(i for i, t in enumerate(self.indexer_types) if t == "full")

    def has_indexer(self, layer: int) -> bool:
        """Whether checkpoint layer ``layer`` owns indexer weights (full layers and the MTP layer)."""
        if layer == self.mtp_layer_index:
            return True
        return self.indexer_types[layer] == "full"

    def is_moe_layer(self, layer: int) -> bool:
        if layer == self.mtp_layer_index:
            return True  # the MTP block is a MoE decoder block in every GLM-5.x/DeepSeek checkpoint
        return self.mlp_layer_types[layer] == "sparse"

    @property
    def softmax_scale(self) -> float:
        """MLA softmax scale: qk_head_dim^-0.5, times mscale^2 for YaRN with mscale_all_dim."""
        scale = self.qk_head_dim**-0.5
        rope = self.rope_parameters
        if rope.rope_type != "default" and rope.mscale_all_dim:
            m = yarn_mscale(self.yarn_factor(), rope.mscale_all_dim)
            scale *= m * m
        return scale

    def yarn_factor(self) -> float:
        rope = self.rope_parameters
        if rope.factor is not None:
            return rope.factor
        return self.max_position_embeddings / rope.original_max_position_embeddings  # type: ignore[operator]

    def filled_values(self) -> dict[str, Any]:
        """The GLM-5.2 values filled in for fields the source config.json omitted."""
        return {name: getattr(self, name) for name in self.filled_fields}

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Glm52Config:
        """Parse a HF config.json dict; raises ConfigError naming the offending field."""
        kw = _parse.parse_fields(d, [f.name for f in dataclasses.fields(cls) if f.init])
        kw["rope_parameters"] = RopeParameters(**kw["rope_parameters"])
        return cls(**kw)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Glm52Config:
        """Read ``config.json`` from a checkpoint directory (or the file itself)."""
        p = Path(path)
        file = p / "config.json" if p.is_dir() else p
        if not file.is_file():
            raise ConfigError(f"{file}: config.json not found")
        try:
            d = json.loads(file.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{file}: not valid JSON ({e})") from e
        if not isinstance(d, dict):
            raise ConfigError(f"{file}: top level must be a JSON object")
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{file}: {e}") from None

    def replace(self, **changes: Any) -> Glm52Config:
        """``dataclasses.replace`` (checked, schedules re-derived), plus two conveniences: an
        ``indexer_types`` list sets the declared schedule, and a new ``num_hidden_layers`` drops
        a declared schedule (re-derived from freq/offset) unless one is given."""
        if "indexer_types" in changes:
            changes["index_topk_pattern"] = _parse.normalise_pattern(
                changes.pop("indexer_types"), "indexer_types"
            )
        if "num_hidden_layers" in changes and "index_topk_pattern" not in changes:
            changes["index_topk_pattern"] = None
        return dataclasses.replace(self, **changes)

    def to_hf_dict(self) -> dict[str, Any]:
        """The config.json a checkpoint of this model carries (transformers 5.x layout); a
        declared schedule is written as transformers writes it, an ``indexer_types`` list."""
        d: dict[str, Any] = {"architectures": ["GlmMoeDsaForCausalLM"], "model_type": "glm_moe_dsa"}
        for f in dataclasses.fields(self):
            if f.name in (
                "filled_fields",
                "mtp_layer_absent",
                "indexer_types",
                "index_topk_pattern",
            ):
                continue
            v = getattr(self, f.name)
            if isinstance(v, RopeParameters):
                v = {k: x for k, x in dataclasses.asdict(v).items() if x is not None}
                if v.get("truncate") is True:
                    v.pop("truncate")
            elif isinstance(v, tuple):
                v = list(v)
            d[f.name] = v
        d["index_topk_pattern"] = None
        if self.index_topk_pattern is not None:
            d["indexer_types"] = list(self.indexer_types)
        return d

    # ---- presets -------------------------------------------------------------------------------
    @classmethod
    def glm52(cls) -> Glm52Config:
        """The real GLM-5.2 dimensions (the published zai-org/GLM-5.2 config.json)."""
        from glm52_plugin.presets import GLM52_CONFIG

        return cls.from_dict(GLM52_CONFIG)

    @classmethod
    def toy(cls, layers: int = 2) -> Glm52Config:
        """CPU-sized toy keeping every GLM-5.2 mechanism: 2 or 8 layers."""
        from glm52_plugin.presets import toy_config_dict

        return cls.from_dict(toy_config_dict(layers))


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0

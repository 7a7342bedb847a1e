"""GLM-5.2 configuration: every field the model uses, parsed once from a HF ``config.json``.

Follows transformers 5.23 ``GlmMoeDsaConfig`` (field names, defaults, IndexShare derivation) and
accepts what any transformers 5.x wrote: top-level ``rope_theta``/``rope_scaling`` or
``rope_parameters``, the meaningless ``head_dim``, legacy ``layer_types`` values and a
``quantization_config``. Spec: ``shared/spec/architecture.md`` sections 1, 5, 6, 13 and 16.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

IndexerType = Literal["full", "shared"]
SUPPORTED_ROPE_TYPES = ("default", "yarn")
# transformers <= 5.22 wrote "deepseek_sparse_attention"; 5.23 maps it to "indexed_attention".
ATTENTION_LAYER_TYPES = ("indexed_attention", "deepseek_sparse_attention")


class ConfigError(ValueError):
    """A config.json value is missing, mistyped or inconsistent; the message names the field."""


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
    index_topk_pattern: str | tuple[str, ...] | None = None
    indexer_types: tuple[IndexerType, ...] = ()  # resolved, one per decoder layer
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
    mlp_layer_types: tuple[Literal["dense", "sparse"], ...] = ()  # resolved
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

    # ---- derived -------------------------------------------------------------------------------
    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

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

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Glm52Config:
        """Parse a HF config.json dict; raises ConfigError naming the offending field."""
        from glm52_plugin._config_parse import parse_config_dict

        return parse_config_dict(cls, d)

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
        """A copy with fields changed and derived schedules re-resolved (via to_hf_dict/from_dict)."""
        d = self.to_hf_dict()
        if (
            "indexer_types" not in changes
            and {
                "index_topk_freq",
                "index_skip_topk_offset",
                "index_topk_pattern",
                "num_hidden_layers",
            }
            & changes.keys()
        ):
            d.pop("indexer_types")
        if (
            "mlp_layer_types" not in changes
            and {
                "first_k_dense_replace",
                "moe_layer_freq",
                "num_hidden_layers",
            }
            & changes.keys()
        ):
            d.pop("mlp_layer_types")
        for k, v in changes.items():
            d[k] = dataclasses.asdict(v) if isinstance(v, RopeParameters) else v
        return Glm52Config.from_dict(d)

    def to_hf_dict(self) -> dict[str, Any]:
        """The config.json a checkpoint of this model carries (transformers 5.x layout)."""
        d: dict[str, Any] = {"architectures": ["GlmMoeDsaForCausalLM"], "model_type": "glm_moe_dsa"}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, RopeParameters):
                v = {k: x for k, x in dataclasses.asdict(v).items() if x is not None}
                if v.get("truncate") is True:
                    v.pop("truncate")
            elif isinstance(v, tuple):
                v = list(v)
            d[f.name] = v
        return d

    # ---- presets -------------------------------------------------------------------------------
    @classmethod
    def glm52(cls) -> Glm52Config:
        """The real GLM-5.2 dimensions (spec section 1)."""
        from glm52_plugin.presets import GLM52_CONFIG

        return cls.from_dict(GLM52_CONFIG)

    @classmethod
    def toy(cls, layers: int = 2) -> Glm52Config:
        """CPU-sized toy keeping every GLM-5.2 mechanism (spec section 16): 2 or 8 layers."""
        from glm52_plugin.presets import toy_config_dict

        return cls.from_dict(toy_config_dict(layers))


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    if scale <= 1:
        return 1.0
    import math

    return 0.1 * mscale * math.log(scale) + 1.0


def resolve_indexer_types(
    num_layers: int,
    indexer_types: Any = None,
    index_topk_pattern: Any = None,
    index_topk_freq: int | None = None,
    index_skip_topk_offset: int | None = None,
) -> tuple[IndexerType, ...]:
    """Per-layer "full"/"shared": explicit list > pattern > freq/offset (transformers 5.23 rule).

    Layer i is full iff ``max(i - offset + 1, 0) % freq == 0``; defaults freq 1, offset 2.
    """
    if indexer_types is not None:
        types = list(indexer_types)
        source = "indexer_types"
    elif index_topk_pattern is not None:
        if isinstance(index_topk_pattern, str):
            bad = sorted(set(index_topk_pattern) - {"F", "S"})
            if bad:
                raise ConfigError(f"index_topk_pattern: characters {bad} are not 'F' or 'S'")
            types = ["full" if c == "F" else "shared" for c in index_topk_pattern]
        else:
            types = list(index_topk_pattern)
        source = "index_topk_pattern"
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
    for i, t in enumerate(types):
        if t not in ("full", "shared"):
            raise ConfigError(f"{source}[{i}]: {t!r} is not 'full' or 'shared'")
    if types and types[0] != "full":
        raise ConfigError(
            f"{source}: layer 0 is 'shared' but a shared layer needs an earlier full layer's top-k"
        )
    return tuple(types)  # type: ignore[return-value]

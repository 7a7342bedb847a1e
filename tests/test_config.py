"""Glm52Config: parsing what transformers 5.x writes, IndexShare schedule, and clear errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import GlmMoeDsaConfig

from glm52_plugin.config import GLM52_FILLS, ConfigError, Glm52Config
from glm52_plugin.presets import GLM52_CONFIG, toy_config_dict

# the 21 full layers of the published GLM-5.2 config.json, written out by hand
GLM52_FULL_LAYERS = [0, 1, 2, 6, 10, 14, 18, 22, 26, 30, 34, 38, 42, 46, 50, 54, 58, 62, 66, 70, 74]


def test_glm52_has_the_21_published_full_layers() -> None:
    cfg = Glm52Config.glm52()
    assert list(cfg.full_layers) == GLM52_FULL_LAYERS
    assert cfg.mtp_layer_index == 78
    assert cfg.qk_head_dim == 256
    assert cfg.softmax_scale == pytest.approx(1 / 16)


def test_glm52_schedule_from_freq_offset_alone_matches_the_explicit_list() -> None:
    d = {k: v for k, v in GLM52_CONFIG.items() if k != "indexer_types"}
    assert list(Glm52Config.from_dict(d).full_layers) == GLM52_FULL_LAYERS


@pytest.mark.parametrize("layers", [2, 8])
def test_toy_schedule_derived_from_freq_offset_equals_the_spec_list(layers: int) -> None:
    d = toy_config_dict(layers)
    explicit = d.pop("indexer_types")
    assert list(Glm52Config.from_dict(d).indexer_types) == explicit
    assert list(GlmMoeDsaConfig(**_hf_kwargs(d)).indexer_types) == explicit


def _hf_kwargs(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ("architectures", "model_type")}


@settings(max_examples=300, deadline=None)
@given(
    layers=st.integers(1, 80),
    freq=st.one_of(st.none(), st.integers(1, 6)),
    offset=st.one_of(st.none(), st.integers(0, 5)),
)
def test_schedule_equals_transformers_for_freq_and_offset(layers, freq, offset) -> None:
    kw = {"num_hidden_layers": layers}
    if freq is not None:
        kw["index_topk_freq"] = freq
    if offset is not None:
        kw["index_skip_topk_offset"] = offset
    expected = GlmMoeDsaConfig(**kw).indexer_types
    if expected[0] == "shared":
        with pytest.raises(ConfigError, match="layer 0"):
            Glm52Config.from_dict(kw)
    else:
        assert list(Glm52Config.from_dict(kw).indexer_types) == expected


@settings(max_examples=200, deadline=None)
@given(pattern=st.text(alphabet="FS", min_size=1, max_size=40).map(lambda s: "F" + s[1:]),
       as_list=st.booleans())  # fmt: skip
def test_pattern_and_explicit_list_take_precedence_like_transformers(pattern, as_list) -> None:
    types = ["full" if c == "F" else "shared" for c in pattern]
    value = types if as_list else pattern
    kw = {"num_hidden_layers": len(pattern), "index_topk_freq": 3, "index_skip_topk_offset": 1}
    hf = GlmMoeDsaConfig(**kw, index_topk_pattern=value).indexer_types
    assert list(Glm52Config.from_dict({**kw, "index_topk_pattern": value}).indexer_types) == hf
    # an explicit indexer_types list beats a contradicting pattern
    flipped = "".join("S" if c == "F" else "F" for c in pattern)
    both = {**kw, "indexer_types": types, "index_topk_pattern": flipped}
    assert list(Glm52Config.from_dict(both).indexer_types) == types
    assert list(GlmMoeDsaConfig(**both).indexer_types) == types


def test_reads_what_transformers_writes() -> None:
    hf = GlmMoeDsaConfig(**_hf_kwargs(toy_config_dict(8)))
    cfg = Glm52Config.from_dict(hf.to_dict())
    assert cfg == Glm52Config.toy(8)


def test_accepts_legacy_and_informational_keys() -> None:
    d = dict(GLM52_CONFIG)
    d.pop("rope_parameters")
    d["rope_theta"] = 8000000.0  # transformers < 5 layout
    d["layer_types"] = ["deepseek_sparse_attention"] * 78  # written by transformers 5.11
    d["quantization_config"] = {"quant_method": "modelopt", "quant_algo": "NVFP4"}
    cfg = Glm52Config.from_dict(d)
    assert cfg.rope_parameters.rope_theta == 8000000.0
    assert cfg.rope_parameters.rope_type == "default"
    assert cfg.qk_nope_head_dim == 192  # the json head_dim (192) is not used for anything


def test_yarn_rope_scaling_sets_mscale_on_the_softmax_scale() -> None:
    d = toy_config_dict(2) | {"rope_parameters": {
        "rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0, "mscale": 1.0,
        "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096}}  # fmt: skip
    cfg = Glm52Config.from_dict(d)
    import math

    mscale = 0.1 * 1.0 * math.log(40.0) + 1.0  # YaRN paper / DeepSeek-V3 yarn_get_mscale
    assert cfg.softmax_scale == pytest.approx(128**-0.5 * mscale**2)


def test_round_trips_through_config_json(tmp_path) -> None:
    cfg = Glm52Config.glm52()
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_hf_dict()))
    assert Glm52Config.from_pretrained(tmp_path) == cfg


BAD_CONFIGS = [
    ({"hidden_size": "6144"}, "hidden_size"),
    ({"hidden_size": 0}, "hidden_size"),
    ({"num_hidden_layers": 2.5}, "num_hidden_layers"),
    ({"norm_topk_prob": "yes"}, "norm_topk_prob"),
    ({"num_key_value_heads": 3}, "num_key_value_heads"),
    ({"rope_parameters": {"rope_type": "dynamic", "rope_theta": 1e4}}, "rope_type"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}},
     "original_max_position_embeddings"),
    ({"indexer_types": ["full", "shared", "full"]}, "indexer_types"),
    ({"indexer_types": ["full", "sometimes"]}, r"indexer_types\[1\]"),
    ({"indexer_types": ["shared", "full"]}, "layer 0"),
    ({"indexer_types": None, "index_topk_pattern": "FX"}, "index_topk_pattern"),
    ({"indexer_types": None, "index_skip_topk_offset": -1}, "index_skip_topk_offset"),
    ({"mlp_layer_types": ["dense", "moe"]}, r"mlp_layer_types\[1\]"),
    ({"layer_types": ["full_attention", "full_attention"]}, r"layer_types\[0\]"),
    ({"eos_token_id": [384, 9999]}, r"eos_token_id\[1\]"),
    ({"model_type": "deepseek_v3"}, "model_type"),
    ({"scoring_func": "softmax"}, "scoring_func"),
    ({"index_head_dim": 32}, "index_head_dim"),
    ({"num_experts_per_tok": 9}, "num_experts_per_tok"),
    ({"n_group": 3}, "n_group"),
    ({"num_nextn_predict_layers": 2}, "num_nextn_predict_layers"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "field"), BAD_CONFIGS, ids=[f for _, f in BAD_CONFIGS])
def test_bad_config_names_the_field(change: dict, field: str) -> None:
    d = toy_config_dict(2) | change
    with pytest.raises(ConfigError, match=field):
        Glm52Config.from_dict(d)


def test_unreadable_config_names_the_file(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"config\.json"):
        Glm52Config.from_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        Glm52Config.from_pretrained(tmp_path / "missing")


def _written_by_transformers(d: dict) -> dict:
    """The config.json transformers' own GlmMoeDsaConfig writes for ``d``: only the fields it
    knows, as when a config is built in code (``GlmMoeDsaConfig(...)``) and saved."""
    known = {f.name for f in dataclasses.fields(GlmMoeDsaConfig)}
    return GlmMoeDsaConfig(**{k: v for k, v in d.items() if k in known}).to_dict()


@pytest.mark.parametrize("layers", [2, 8])
def test_fields_transformers_omits_take_glm52_values_and_are_recorded(layers: int) -> None:
    full = toy_config_dict(layers)
    written = _written_by_transformers(full)
    omitted = set(full) - set(written)
    # what transformers 5.x drops is exactly what the fill covers (plus the None pattern and
    # freq/offset, which its indexer_types list replaces)
    assert set(GLM52_FILLS) <= omitted
    assert omitted - set(GLM52_FILLS) <= {"index_topk_pattern", "index_topk_freq",
                                          "index_skip_topk_offset"}  # fmt: skip
    cfg = Glm52Config.from_dict(written)
    assert set(cfg.filled_fields) == set(GLM52_FILLS)
    # the toy uses GLM-5.2's values for the filled fields; the schedule came as indexer_types
    schedule = {k: full[k] for k in ("index_topk_freq", "index_skip_topk_offset")}
    assert dataclasses.replace(cfg, **schedule) == Glm52Config.toy(layers)
    assert cfg.filled_values() == {name: full[name] for name in GLM52_FILLS}
    assert Glm52Config.toy(layers).filled_fields == ()


def test_dataclasses_replace_rederives_and_rechecks() -> None:
    base = Glm52Config.from_dict({k: v for k, v in toy_config_dict(8).items()
                                  if k not in ("indexer_types", "mlp_layer_types")})  # fmt: skip
    assert base.index_topk_pattern is None  # schedule derived from freq 4 / offset 3
    wider = dataclasses.replace(base, num_hidden_layers=12, first_k_dense_replace=2)
    want = GlmMoeDsaConfig(num_hidden_layers=12, index_topk_freq=4, index_skip_topk_offset=3,
                           first_k_dense_replace=2)  # fmt: skip
    assert list(wider.indexer_types) == want.indexer_types
    assert list(wider.mlp_layer_types) == want.mlp_layer_types
    assert dataclasses.replace(base, index_topk_freq=2).indexer_types != base.indexer_types
    # a declared schedule stays declared, and must fit the layer count
    declared = dataclasses.replace(base, index_topk_pattern="FSFS" * 2)
    assert declared.indexer_pattern == "FSFSFSFS"
    with pytest.raises(ConfigError, match="index_topk_pattern: has 8 entries"):
        dataclasses.replace(declared, num_hidden_layers=4)
    with pytest.raises(ConfigError, match="num_key_value_heads"):
        dataclasses.replace(base, num_key_value_heads=3)
    with pytest.raises(ConfigError, match="hidden_size"):
        dataclasses.replace(base, hidden_size="256")
    # the method form drops a declared schedule when the layer count changes
    assert Glm52Config.toy(8).replace(num_hidden_layers=12).indexer_types == wider.indexer_types


def test_indexer_pattern_is_the_f_s_string_transformers_reads() -> None:
    cfg = Glm52Config.glm52()
    assert cfg.indexer_pattern == "".join("F" if i in GLM52_FULL_LAYERS else "S" for i in range(78))
    hf = GlmMoeDsaConfig(num_hidden_layers=78, index_topk_pattern=cfg.indexer_pattern)
    assert tuple(hf.indexer_types) == cfg.indexer_types


def test_declared_mlp_layer_types_must_match_what_engines_build() -> None:
    d = toy_config_dict(8) | {"mlp_layer_types": ["dense", "dense"] + ["sparse"] * 6}
    with pytest.raises(ConfigError, match="first_k_dense_replace=1"):
        Glm52Config.from_dict(d)


def test_config_parse_is_a_leaf() -> None:
    import ast
    import inspect

    from glm52_plugin import _config_parse

    tree = ast.parse(inspect.getsource(_config_parse))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.startswith("glm52_plugin")}

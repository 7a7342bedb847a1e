"""Exclusion matching as vLLM ModelOptQuantConfigBase.is_layer_excluded (spec vllm.md 7.2)."""

from __future__ import annotations

import pytest

from glm52_plugin.checkpoint.quant import (
    QuantConfig,
    QuantConfigError,
    from_hf_quant_config,
    from_quantization_config,
)


def _q(*exclude: str) -> QuantConfig:
    return QuantConfig("NVFP4", 16, exclude, None, "test")


@pytest.mark.parametrize(
    ("exclude", "module", "excluded"),
    [
        # 1. exact
        (["lm_head"], "lm_head", True),
        # 2. legacy substring: a bare name anywhere in the path
        (["self_attn"], "model.layers.5.self_attn.q_a_proj", True),
        (["mlp.gate"], "model.layers.5.mlp.gate", True),
        (["visual"], "language_model.model.visual.x", True),
        # substring has no component boundary: "model.layers.7" also hits layer 70 (vLLM does too)
        (["model.layers.7"], "model.layers.70.mlp.experts.0.up_proj", True),
        # 3. fnmatch wildcards; '*' crosses dots, so module-path globs cover whole subtrees
        (["model.layers.78*"], "model.layers.78.shared_head.head", True),
        (["*self_attn*"], "model.layers.3.self_attn.indexer.wk", True),
        (["*mlp.gate.*"], "model.layers.3.mlp.gate", False),  # no trailing dot on the module
        (["*mlp.gate*"], "model.layers.3.mlp.gate", True),
        (["*mlp.gate*"], "model.layers.3.mlp.experts.0.gate_proj", False),
        (["model.layers.0*"], "model.layers.3.mlp.experts.0.gate_proj", False),
        ([], "lm_head", False),
    ],
)
def test_is_excluded(exclude, module, excluded):
    assert _q(*exclude).is_excluded(module) is excluded


@pytest.mark.parametrize(
    ("exclude", "module", "partner"),
    [
        (["*q_a_proj"], "model.layers.0.self_attn.q_a_proj", "kv_a_proj_with_mqa"),
        (["*kv_a_proj_with_mqa"], "model.layers.0.self_attn.q_a_proj", "kv_a_proj_with_mqa"),
        (["*experts.1.up_proj"], "model.layers.3.mlp.experts.1.gate_proj", "up_proj"),
        (["*indexer.wk"], "model.layers.0.self_attn.indexer.weights_proj", "wk"),
    ],
)
def test_fused_shards_must_agree(exclude, module, partner):
    with pytest.raises(QuantConfigError, match=partner):
        _q(*exclude).is_quantized(module)


def test_fused_shards_that_agree():
    q = _q("*self_attn*")
    assert not q.is_quantized("model.layers.0.self_attn.q_a_proj")
    assert q.is_quantized("model.layers.3.mlp.experts.0.gate_proj")


def test_both_description_formats():
    legacy = from_hf_quant_config(
        {"producer": {"name": "modelopt"},
         "quantization": {"quant_algo": "nvfp4", "group_size": 16, "kv_cache_quant_algo": "FP8",
                          "exclude_modules": ["lm_head"]}})  # fmt: skip
    assert (legacy.algo, legacy.kv_cache_algo, legacy.exclude) == ("NVFP4", "FP8", ("lm_head",))
    ct = from_quantization_config(
        {"quant_method": "modelopt", "quant_algo": "NVFP4", "ignore": ["lm_head"],
         "kv_cache_scheme": {"num_bits": 8, "type": "float", "dynamic": False},
         "config_groups": {"group_0": {"weights": {"num_bits": 4, "group_size": 16}}}})  # fmt: skip
    assert (ct.algo, ct.group_size) == ("NVFP4", 16)
    assert ct.exclude == ("lm_head",)
    assert ct.kv_cache_algo == "FP8"
    # either key in either place
    assert from_quantization_config(
        {"quant_method": "modelopt", "quant_algo": "NVFP4", "exclude_modules": ["x"]}
    ).exclude == ("x",)


@pytest.mark.parametrize(
    ("d", "msg"),
    [
        ({"quant_method": "modelopt"}, "quant_algo"),
        ({"quant_method": "modelopt", "quant_algo": "FP8"}, "unsupported"),
        ({"quant_method": "gptq", "quant_algo": "NVFP4"}, "not modelopt"),
        ({"quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": 32}, "16"),
        ({"quant_method": "modelopt", "quant_algo": "NVFP4", "ignore": "lm_head"}, "list"),
    ],
)
def test_bad_descriptions(d, msg):
    with pytest.raises(QuantConfigError, match=msg):
        from_quantization_config(d)

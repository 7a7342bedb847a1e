"""The vLLM model's checkpoint stream filter (engine-free): indexer routing and NVFP4 dequant."""

from __future__ import annotations

import logging

import pytest
import torch

from glm52_plugin.checkpoint import CheckpointError
from glm52_plugin.config import Glm52Config
from glm52_plugin.vllm.weights import dense_twin_dict, route_checkpoint_weights

E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]  # spec section 10.3


def _route(weights, cfg):
    own: dict[str, torch.Tensor] = {}
    names = {"model.layers.0.self_attn.indexer.wk.weight"}
    out = list(route_checkpoint_weights(weights, cfg, names, own.__setitem__, torch.float32))
    return out, own


def test_indexer_tensors_are_routed_by_the_schedule(caplog) -> None:
    cfg = Glm52Config.toy(2)  # layer 0 full, layer 1 shared, MTP layer 2
    t = torch.zeros(128, 256)
    weights = [
        ("model.layers.0.self_attn.indexer.wk.weight", t),
        ("model.layers.1.self_attn.indexer.wk.weight", t),
        ("model.layers.1.self_attn.indexer.wq_b.weight", t),
        ("model.layers.2.self_attn.indexer.wk.weight", t),
        ("model.norm.weight", torch.ones(256)),
    ]
    with caplog.at_level(logging.WARNING):
        out, own = _route(weights, cfg)
    assert set(own) == {"model.layers.0.self_attn.indexer.wk.weight"}
    assert [n for n, _ in out] == [
        "model.layers.2.self_attn.indexer.wk.weight",
        "model.norm.weight",
    ]
    assert sum("layer 1 is a shared IndexShare layer" in r.message for r in caplog.records) == 1


def test_nvfp4_linear_is_dequantized_with_the_spec_formula() -> None:
    codes = torch.arange(32, dtype=torch.uint8).remainder(16).view(1, 32)  # one row, K = 32
    packed = (codes[:, 1::2] << 4) | codes[:, 0::2]  # element 2j low nibble, 2j+1 high
    scales = torch.tensor([[2.0, 0.5]]).to(torch.float8_e4m3fn)
    prefix = "model.layers.1.mlp.experts.0.up_proj"
    weights = [
        (f"{prefix}.weight_scale", scales),
        (f"{prefix}.input_scale", torch.tensor(1.0)),
        (f"{prefix}.weight", packed),
        (f"{prefix}.weight_scale_2", torch.tensor(0.25)),
    ]
    out, _ = _route(weights, Glm52Config.toy(2))
    assert [n for n, _ in out] == [f"{prefix}.weight"]
    values = [(-1 if c >= 8 else 1) * E2M1[c % 8] for c in codes[0].tolist()]
    expected = torch.tensor([v * (2.0 if i < 16 else 0.5) * 0.25 for i, v in enumerate(values)])
    assert torch.equal(out[0][1], expected.view(1, 32))


def test_incomplete_nvfp4_linear_is_an_error() -> None:
    prefix = "model.layers.1.mlp.experts.0.down_proj"
    weights = [(f"{prefix}.weight", torch.zeros(4, 8, dtype=torch.uint8)),
               (f"{prefix}.weight_scale", torch.ones(4, 1).to(torch.float8_e4m3fn))]  # fmt: skip
    with pytest.raises(
        CheckpointError, match=r"down_proj.weight: NVFP4 linear lacks \['weight_scale_2'\]"
    ):
        _route(weights, Glm52Config.toy(2))


def test_dense_twin_has_no_dsa_keys_and_routes_in_fp32() -> None:
    twin = dense_twin_dict(Glm52Config.glm52().to_hf_dict())
    assert not [k for k in twin if k.startswith(("index", "indexer"))]
    assert twin["moe_router_dtype"] == "float32"
    assert "model_type" not in twin


def test_glm52_schedule_becomes_vllms_index_topk_pattern() -> None:
    pattern = Glm52Config.glm52().indexer_pattern
    assert len(pattern) == 78
    assert [i for i, c in enumerate(pattern) if c == "F"] == [0, 1, 2, *range(6, 78, 4)]

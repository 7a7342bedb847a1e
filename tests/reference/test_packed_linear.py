"""Routed experts kept packed (NVFP4, decoded per call) against dequantise-at-load."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from torch import nn

from glm52_plugin.nvfp4 import PackedWeight, quantize
from glm52_plugin.reference import Glm52ForCausalLM
from glm52_plugin.reference.generate import generate
from glm52_plugin.reference.packed_linear import PackedLinear, install
from tests.conftest import prompt_ids


def _load(path, dtype=torch.float32, packed=False) -> Glm52ForCausalLM:
    return Glm52ForCausalLM.from_pretrained(
        path, dtype=dtype, progress=False, packed_experts=packed
    )


@pytest.mark.parametrize("layers", [2, 8])
def test_packed_experts_give_the_same_logits_and_tokens(toy_nvfp4_checkpoints, layers):
    path = toy_nvfp4_checkpoints[layers]
    dense, packed = _load(path), _load(path, packed=True)
    cfg = packed.config
    experts = [m for m in packed.modules() if isinstance(m, PackedLinear)]
    # every routed expert linear of the MoE layers (layer 0 is dense, the MTP layer is BF16)
    assert len(experts) == 3 * cfg.n_routed_experts * (layers - 1)
    ids = prompt_ids(40)  # longer than the toy's index_topk: sparse attention engaged
    assert torch.equal(packed(ids), dense(ids))
    want = generate(dense, ids, 8).tokens
    assert generate(packed, ids, 8).tokens == want


def test_packed_experts_hold_the_checkpoint_bytes(toy_nvfp4_checkpoints):
    path = toy_nvfp4_checkpoints[2]
    model = _load(path, packed=True)
    layer = model.config.first_k_dense_replace  # first MoE layer
    name = f"model.layers.{layer}.mlp.experts.3.down_proj"
    module = model.get_submodule(name)
    shard = next(p for p in sorted(path.glob("*.safetensors")) if f"{name}.weight" in _keys(p))
    with safe_open(shard, framework="pt") as f:
        assert torch.equal(module.weight_packed, f.get_tensor(f"{name}.weight"))
        assert torch.equal(
            module.weight_scale, f.get_tensor(f"{name}.weight_scale").view(torch.uint8)
        )
    n, k = module.out_features, module.in_features
    held = sum(b.numel() * b.element_size() for b in module.buffers())
    assert held == n * k // 2 + n * k // 16 + 4  # 4.5 bits a weight + the fp32 global scale


def _keys(path) -> set[str]:
    with safe_open(path, framework="pt") as f:
        return set(f.keys())


def test_a_dtype_cast_does_not_convert_the_packed_bits():
    # module.to(dtype) converts floating tensors: the fp8 block scales and the fp32 global scale
    # would be rounded if they were stored as such
    weight = PackedWeight(*quantize(torch.randn(16, 64), torch.tensor(0.37 / 2688)))
    module = PackedLinear(weight, torch.float32).to(torch.bfloat16)
    assert torch.equal(module.weight_scale_2.view(torch.float32), weight.weight_scale_2)
    assert torch.equal(module.weight_scale, weight.weight_scale.view(torch.uint8))
    x = torch.randn(3, 64).bfloat16()
    assert torch.equal(module(x), x @ weight.dequantize(torch.bfloat16).T)


def test_packed_experts_refused_for_a_bf16_checkpoint(toy_checkpoints):
    with pytest.raises(ValueError, match="needs an NVFP4 checkpoint"):
        _load(toy_checkpoints[2], packed=True)


def test_install_checks_the_target_and_the_shape():
    model = nn.Sequential(nn.Linear(32, 8, bias=False), nn.Linear(32, 8, bias=True))
    weight = PackedWeight(*quantize(torch.randn(8, 32)))
    install(model, "0", weight, torch.float32)
    assert isinstance(model[0], PackedLinear)
    assert torch.equal(model[0].weight, weight.dequantize(torch.float32))
    with pytest.raises(ValueError, match="1: not a bias-free linear"):
        install(model, "1", weight, torch.float32)
    model.append(nn.Linear(64, 8, bias=False))
    with pytest.raises(
        ValueError, match=r"2: NVFP4 weight decodes to \(8, 32\), expected \(8, 64\)"
    ):
        install(model, "2", weight, torch.float32)

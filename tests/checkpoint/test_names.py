"""Checkpoint-name helpers against names written out by hand (NVIDIA GLM-5.2-NVFP4 layout)."""

from __future__ import annotations

import pytest

from glm52_plugin.checkpoint.names import routed_expert_layer


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("model.layers.3.mlp.experts.0.gate_proj", 3),
        ("model.layers.77.mlp.experts.255.up_proj", 77),
        ("model.layers.78.mlp.experts.17.down_proj", 78),  # the MTP layer's experts too
        ("model.layers.3.mlp.shared_experts.gate_proj", None),
        ("model.layers.3.mlp.gate", None),
        ("model.layers.0.mlp.gate_proj", None),  # dense FFN
        ("model.layers.3.mlp.experts.0.gate_proj.weight", None),  # a tensor, not a module
        ("model.layers.3.self_attn.q_a_proj", None),
        ("lm_head", None),
    ],
)
def test_routed_expert_layer(module, layer):
    assert routed_expert_layer(module) == layer

"""Planner numbers against hand computation from GLM-5.2's config.json dims (zai-org/GLM-5.2)."""

from __future__ import annotations

import pytest

from glm52_plugin.config import Glm52Config
from glm52_plugin.plan.estimate import (
    active_params,
    count_params,
    decode_flops,
    kv_bytes_per_token,
    weight_bytes_per_gpu,
)

CFG = Glm52Config.glm52()
EXPERT = 3 * 2048 * 6144  # gate, up, down of one expert


def test_parameter_counts_by_hand():
    p = count_params(CFG)
    assert p.main == pytest.approx(743.38e9, abs=0.005e9)
    assert p.mtp == pytest.approx(9.95e9, abs=0.005e9)
    assert p.main + p.mtp == pytest.approx(753.33e9, abs=0.005e9)
    assert p.per_layer["mla"] == pytest.approx(165.0e6, abs=0.05e6)
    assert p.per_layer["indexer"] == pytest.approx(9.37e6, abs=0.005e6)
    assert p.per_layer["expert"] == EXPERT == pytest.approx(37.75e6, abs=0.005e6)
    assert p.per_layer["dense_ffn"] == 3 * 12288 * 6144
    assert p.routed_experts == 76 * 256 * EXPERT  # layers 3-77 + MTP
    assert active_params(CFG) == pytest.approx(40.3e9, abs=0.05e9)


def test_kv_bytes_per_token_hand_computed():
    # 78 + 1 MTP layers of 576-value latent; indexer keys (132 B) on 21 full layers + MTP
    assert kv_bytes_per_token(CFG, "bf16") == 79 * 1152 + 22 * 132
    assert kv_bytes_per_token(CFG, "fp8") == 79 * 576 + 22 * 132
    assert kv_bytes_per_token(CFG, "fp8_ds_mla") == 79 * 656 + 22 * 132
    assert kv_bytes_per_token(CFG, "bf16", index_share=False) == 79 * 1152 + 79 * 132


def test_weight_bytes_nvfp4_and_bf16():
    routed_main = 75 * 256 * EXPERT
    total = 753_329_940_480
    other = total - routed_main
    nvfp4 = weight_bytes_per_gpu(CFG, "nvfp4", tp=1, ep=1)
    # 4.5 bits per routed-expert weight, everything else (MTP experts too) 2 bytes
    assert nvfp4 == pytest.approx(routed_main * 0.5625 + other * 2, rel=1e-6)
    assert weight_bytes_per_gpu(CFG, "bf16", 1, 1) == pytest.approx(total * 2, rel=1e-6)
    # EP 8 divides experts by 8; replicated parts (q_a, kv_a, indexer, router, norms) stay
    ep8 = weight_bytes_per_gpu(CFG, "nvfp4", tp=8, ep=8)
    assert nvfp4 / 8 < ep8 < nvfp4 / 4


def test_indexshare_flops_at_1m_context():
    ctx = 1 << 20
    with_is, without = decode_flops(CFG, ctx, True), decode_flops(CFG, ctx, False)
    # indexer scores: 32 heads x (128-d dot + 1 weight) x ctx x layers running an indexer
    assert with_is.indexer == 2 * 32 * 129 * ctx * 21
    assert without.indexer / with_is.indexer == pytest.approx(78 / 21)
    # sparse MLA (absorbed): 64 heads x 2048 keys x (576 + 512) x 78 layers
    assert with_is.attention == without.attention == 2 * 64 * 2048 * 1088 * 78
    ratio = without.total / with_is.total
    # published "2.9x": between the all-FLOPs ratio and the indexer-only ratio (78/21)
    assert 2.6 < ratio < 2.9 < 78 / 21

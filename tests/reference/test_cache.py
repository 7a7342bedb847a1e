"""Incremental decoding with the latent / indexer-key cache equals recomputing the whole sequence."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import prompt_ids


def test_token_by_token_decode_matches_full_forward(toy_model) -> None:
    # Not seed 3: on AVX-512 machines it puts two indexer scores 3e-8 apart at the top-k cut-off
    # of one 8-layer-toy layer, where decode and full recompute may round either way (matmul
    # blocking differs by shape) and legitimately select different keys.
    ids = prompt_ids(60, seed=0)
    full = toy_model(ids)
    cache = toy_model.new_cache()
    steps = [toy_model(ids[:, :20], cache)]
    steps += [toy_model(ids[:, t : t + 1], cache) for t in range(20, 60)]
    assert (torch.cat(steps, 1) - full).abs().max().item() < 1e-4


@pytest.mark.parametrize("chunks", [(1, 15, 1, 30, 13), (33, 27)])
def test_chunked_prefill_matches_full_forward(toy_model, chunks) -> None:
    ids = prompt_ids(60, batch=2, seed=4)
    full = toy_model(ids)
    cache, start, parts = toy_model.new_cache(), 0, []
    for n in chunks:
        parts.append(toy_model(ids[:, start : start + n], cache))
        start += n
    assert (torch.cat(parts, 1) - full).abs().max().item() < 1e-4


def test_only_full_layers_cache_indexer_keys(toy_model, toy_config) -> None:
    cache = toy_model.new_cache()
    toy_model(prompt_ids(20), cache)
    for i, kind in enumerate(toy_config.indexer_types):
        layer = cache.layers[i]
        assert layer.length == 20
        assert (layer.index_k is not None) == (kind == "full")
        if layer.index_k is not None:
            assert layer.index_k.view().shape == (1, 20, toy_config.index_head_dim)
        assert layer.kv.view().shape == (
            1,
            20,
            toy_config.kv_lora_rank + toy_config.qk_rope_head_dim,
        )

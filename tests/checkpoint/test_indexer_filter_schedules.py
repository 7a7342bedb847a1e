"""IndexShare indexer-tensor rules on the 8-layer toy's schedule (the filter both adapters use)."""

from __future__ import annotations

import pytest

from glm52_plugin.checkpoint.indexer_filter import (
    INDEXER_MODULES,
    IndexerFilter,
    full_layers,
    indexer_layer,
    is_dropped,
    shared_layers,
)
from glm52_plugin.config import Glm52Config
from glm52_plugin.toy.weights import toy_state_dict


def _indexer_names(layer: int) -> list[str]:
    p = f"model.layers.{layer}.self_attn.indexer"
    return [f"{p}.wq_b.weight", f"{p}.wk.weight", f"{p}.k_norm.weight", f"{p}.k_norm.bias", f"{p}.weights_proj.weight"]  # fmt: skip


@pytest.fixture(scope="module")
def toy8() -> tuple[Glm52Config, list[str]]:
    """The 8-layer toy (F,F,F,S,S,S,F,S + MTP layer 8) with indexer tensors added on its shared layers,
    as a checkpoint exported without IndexShare pruning would carry them."""
    cfg = Glm52Config.toy(8)
    names = list(toy_state_dict(cfg, 0))
    for layer in shared_layers(cfg.indexer_types):
        names += _indexer_names(layer)
    return cfg, names


def test_indexer_layer_parses_layer_and_module() -> None:
    assert indexer_layer("model.layers.78.self_attn.indexer.wk.weight_scale") == (78, "wk")
    assert indexer_layer("model.layers.3.self_attn.kv_a_proj_with_mqa.weight") is None
    assert indexer_layer("model.layers.3.mlp.indexer.wk.weight") is None  # only self_attn.indexer


def test_toy_schedule_helpers() -> None:
    types = Glm52Config.toy(8).indexer_types
    assert full_layers(types) == (0, 1, 2, 6)
    assert shared_layers(types) == {3, 4, 5, 7}


def test_filter_drops_exactly_shared_layer_indexer_tensors(toy8) -> None:
    cfg, names = toy8
    types = cfg.indexer_types
    filt = IndexerFilter(shared=shared_layers(types), expected_full=full_layers(types))
    kept = [n for n, _ in filt((n, None) for n in names)]
    dropped = set(names) - set(kept)
    assert dropped == {n for n in names if is_dropped(n, shared_layers(types))}
    assert {indexer_layer(n)[0] for n in dropped} == {3, 4, 5, 7}
    assert dict(filt.dropped) == {layer: len(INDEXER_MODULES) + 1 for layer in (3, 4, 5, 7)}
    # Everything else passes in order, the MTP layer's (8) indexer included.
    assert kept == [n for n in names if n not in dropped]
    assert any(n.startswith("model.layers.8.self_attn.indexer.") for n in kept)
    filt.check()
    assert "4 'shared' layer(s)" in filt.summary()
    assert "[3, 4, 5, 7]" in filt.summary()


def test_filter_summary_is_empty_when_nothing_dropped() -> None:
    cfg = Glm52Config.toy(8)
    filt = IndexerFilter(shared=shared_layers(cfg.indexer_types), expected_full=())
    list(filt((n, None) for n in toy_state_dict(cfg, 0)))  # the toy writer prunes shared layers
    assert filt.summary() == ""


def test_missing_full_layer_indexer_fails_naming_layer_and_tensors(toy8) -> None:
    cfg, names = toy8
    gone = {"model.layers.6.self_attn.indexer.wk.weight", "model.layers.6.self_attn.indexer.weights_proj.weight"}  # fmt: skip
    filt = IndexerFilter(
        shared=shared_layers(cfg.indexer_types), expected_full=full_layers(cfg.indexer_types)
    )
    list(filt((n, None) for n in names if n not in gone))
    assert filt.missing() == {6: ("wk", "weights_proj")}
    with pytest.raises(
        ValueError, match=r"layer 6: self_attn\.indexer\.wk, self_attn\.indexer\.weights_proj"
    ):
        filt.check()


def test_a_whole_missing_indexer_is_reported(toy8) -> None:
    _, names = toy8
    filt = IndexerFilter(shared=(), expected_full=(0, 8))
    list(filt((n, None) for n in names if not n.startswith("model.layers.8.self_attn.indexer.")))
    assert filt.missing() == {8: INDEXER_MODULES}


def test_nvfp4_scale_tensors_count_as_present() -> None:
    p = "model.layers.0.self_attn.indexer"
    names = [f"{p}.wq_b.weight_scale", f"{p}.wq_b.weight", f"{p}.wk.weight", f"{p}.k_norm.weight", f"{p}.weights_proj.weight"]  # fmt: skip
    filt = IndexerFilter(shared=(), expected_full=(0,))
    list(filt((n, None) for n in names))
    filt.check()

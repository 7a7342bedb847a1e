"""The engine-free IndexShare indexer filter both engine adapters use (glm52_plugin.checkpoint)."""

from __future__ import annotations

import logging

import pytest
import torch

from glm52_plugin.checkpoint.indexer_filter import (
    INDEXER_MODULES,
    IndexerFilter,
    indexer_layer,
    require_indexers_loaded,
)
from glm52_plugin.checkpoint.names import expected_tensors
from glm52_plugin.config import Glm52Config

LOG = logging.getLogger("glm52_test.indexer_filter")


def _indexer_names(layer: int) -> list[str]:
    p = f"model.layers.{layer}.self_attn.indexer"
    return [f"{p}.wq_b.weight", f"{p}.wk.weight", f"{p}.k_norm.weight", f"{p}.k_norm.bias", f"{p}.weights_proj.weight"]  # fmt: skip


def _shared(cfg: Glm52Config) -> list[int]:
    return [i for i, t in enumerate(cfg.indexer_types) if t == "shared"]


def _unpruned(cfg: Glm52Config) -> list[str]:
    """The spec's checkpoint names plus indexer tensors on every shared layer, as a checkpoint
    exported without IndexShare pruning carries them."""
    names = list(expected_tensors(cfg))
    for layer in _shared(cfg):
        names += _indexer_names(layer)
    return names


def _stream(names: list[str]) -> list[tuple[str, torch.Tensor]]:
    return [(n, torch.full((1,), float(i))) for i, n in enumerate(names)]


def test_indexer_layer_parses_layer_and_module() -> None:
    assert indexer_layer("model.layers.78.self_attn.indexer.wk.weight_scale") == (78, "wk")
    assert indexer_layer("model.layers.3.self_attn.indexer.k_norm.bias") == (3, "k_norm")
    assert indexer_layer("model.layers.3.self_attn.kv_a_proj_with_mqa.weight") is None
    assert indexer_layer("model.layers.3.mlp.indexer.wk.weight") is None
    assert indexer_layer("model.layers.3.self_attn.indexers.wk.weight") is None
    assert indexer_layer("lm_head.weight") is None


def test_shared_layer_tensors_dropped_with_one_warning_per_layer(toy_config, caplog) -> None:
    names = _unpruned(toy_config)
    weights = _stream(names)
    filt = IndexerFilter.for_decoder(toy_config, warn_each_layer=LOG)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        kept = list(filt(weights))
    shared = _shared(toy_config)
    gone = {n for layer in shared for n in _indexer_names(layer)}
    # everything else passes, in order and as the same tensor objects
    assert [n for n, _ in kept] == [n for n in names if n not in gone]
    by_name = dict(weights)
    assert all(t is by_name[n] for n, t in kept)
    assert dict(filt.dropped) == {layer: 5 for layer in shared}
    messages = [r.getMessage() for r in caplog.records if r.name == LOG.name]
    assert messages == [
        f"layer {layer} is a shared IndexShare layer: ignoring its indexer tensors "
        f"({_indexer_names(layer)[0]}, ...)"
        for layer in shared
    ]
    assert f"{len(shared)} 'shared' layer(s)" in filt.summary()
    assert str(shared) in filt.summary()
    filt.check()  # every full layer's indexer came through


def test_full_layer_tensors_pass_and_are_recorded(toy_config) -> None:
    filt = IndexerFilter.for_decoder(toy_config)
    kept = {n for n, _ in filt(_stream(_unpruned(toy_config)))}
    for layer in toy_config.full_layers:
        assert set(_indexer_names(layer)) <= kept
        assert {(layer, m) for m in INDEXER_MODULES} <= filt.seen


def test_without_a_logger_nothing_is_logged_until_summary(toy_config, caplog) -> None:
    filt = IndexerFilter.for_decoder(toy_config)
    with caplog.at_level(logging.DEBUG):
        list(filt(_stream(_unpruned(toy_config))))
    assert not [r for r in caplog.records if "IndexShare" in r.getMessage()]
    assert filt.summary().startswith(f"ignored {5 * len(_shared(toy_config))} indexer tensor(s)")


def test_pruned_checkpoint_drops_nothing(toy_config) -> None:
    names = list(expected_tensors(toy_config))
    filt = IndexerFilter.for_decoder(toy_config, warn_each_layer=LOG)
    assert [n for n, _ in filt(_stream(names))] == names
    assert filt.summary() == ""


def test_missing_full_layer_indexer_is_named(toy_config) -> None:
    layer = toy_config.full_layers[-1]
    gone = {f"model.layers.{layer}.self_attn.indexer.{m}.weight" for m in ("wk", "weights_proj")}
    filt = IndexerFilter.for_decoder(toy_config)
    list(filt(_stream([n for n in _unpruned(toy_config) if n not in gone])))
    assert filt.missing() == {layer: ("wk", "weights_proj")}
    with pytest.raises(ValueError, match=rf"lacks indexer tensors of 1 'full' .*: layer {layer}: "
                       r"self_attn\.indexer\.wk, self_attn\.indexer\.weights_proj$"):  # fmt: skip
        filt.check()


def test_mtp_layer_passes_the_decoder_filter_and_is_expected_by_the_mtp_filter(
    toy_config,
) -> None:
    mtp = toy_config.mtp_layer_index
    assert mtp == toy_config.num_hidden_layers
    # vLLM's criterion before the fold: a decoder layer (< num_hidden_layers) without an indexer
    assert IndexerFilter.for_decoder(toy_config).shared == {
        i for i in range(toy_config.num_hidden_layers) if not toy_config.has_indexer(i)
    }
    mtp_names = set(_indexer_names(mtp))
    with_mtp = _unpruned(toy_config)
    assert mtp_names <= set(with_mtp)
    without_mtp = [n for n in with_mtp if n not in mtp_names]

    decoder = IndexerFilter.for_decoder(toy_config)
    assert mtp_names <= {n for n, _ in decoder(_stream(with_mtp))}  # left for the MTP model
    assert mtp not in decoder.dropped
    decoder = IndexerFilter.for_decoder(toy_config)
    list(decoder(_stream(without_mtp)))
    decoder.check()  # the main model does not need the MTP layer's indexer

    draft = IndexerFilter.for_mtp(toy_config)
    assert [n for n, _ in draft(_stream(with_mtp))] == with_mtp  # drops nothing
    draft.check()
    draft = IndexerFilter.for_mtp(toy_config)
    list(draft(_stream(without_mtp)))
    with pytest.raises(ValueError, match=rf"layer {mtp}: self_attn\.indexer\.wq_b"):
        draft.check()


def test_require_indexers_loaded_names_the_unloaded_parameters() -> None:
    params = [
        "model.layers.0.self_attn.indexer.wq_b.weight",
        "model.layers.0.self_attn.indexer.wk_weights_proj.weight",  # a fused engine name
        "model.layers.0.mlp.gate.weight",
    ]
    require_indexers_loaded(params, set(params[:2]), "full layers")
    with pytest.raises(
        ValueError,
        match=r"^checkpoint lacks indexer tensors of full layers: "
        r"\['model\.layers\.0\.self_attn\.indexer\.wk_weights_proj\.weight'\]$",
    ):
        require_indexers_loaded(params, {params[0]}, "full layers")

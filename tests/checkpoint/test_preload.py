"""validate_before_load: what the engine adapters run on a checkpoint before loading it."""

from __future__ import annotations

import logging
import shutil

import pytest

from glm52_plugin.checkpoint import CheckpointError
from glm52_plugin.checkpoint.preload import local_checkpoint_dir, validate_before_load
from tests.checkpoint.conftest import copy_indexer_to_shared_layer, edit_tensors


def test_a_clean_local_toy_validates(nvfp4_toys) -> None:
    report = validate_before_load(str(nvfp4_toys[2]))
    assert report is not None
    assert report.nvfp4_modules  # the routed experts
    assert not report.errors


def test_a_corrupt_toy_fails_naming_the_tensor(nvfp4_toys, tmp_path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(nvfp4_toys[2], bad)
    victim = "model.layers.1.mlp.experts.3.down_proj.weight_scale_2"
    edit_tensors(bad, lambda t: t.pop(victim, None))
    with pytest.raises(CheckpointError, match=r"experts\.3\.down_proj"):
        validate_before_load(str(bad))


def test_a_hub_id_resolves_to_its_cached_snapshot(nvfp4_toys, tmp_path, monkeypatch) -> None:
    pytest.importorskip("huggingface_hub", reason="huggingface_hub is not installed")
    # the Hub cache layout huggingface_hub itself reads: refs/main -> snapshots/<commit>/
    repo = tmp_path / "hub" / "models--nvidia--GLM-5.2-toy"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(nvfp4_toys[2], repo / "snapshots" / commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert local_checkpoint_dir("nvidia/GLM-5.2-toy") == repo / "snapshots" / commit


def test_anything_else_is_skipped_with_a_log_line(tmp_path, caplog) -> None:
    with caplog.at_level(logging.INFO):
        assert validate_before_load(str(tmp_path / "nowhere")) is None
    assert "header validation skipped" in caplog.text


def test_shared_layer_indexer_tensors_are_left_to_the_adapters_filter(copy_toy, caplog) -> None:
    path = copy_toy(2)
    edit_tensors(path, copy_indexer_to_shared_layer)
    with caplog.at_level(logging.WARNING):
        report = validate_before_load(str(path))
    ignored = [n for n in report.ignored if ".indexer." in n]
    assert ignored
    assert all(n.startswith("model.layers.1.self_attn.indexer.") for n in ignored)
    # the vLLM / SGLang weight filters warn while loading; no second warning from here
    assert "IndexShare" not in caplog.text

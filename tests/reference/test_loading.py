"""BF16 checkpoint loading: indexer tensors on shared IndexShare layers are ignored, loudly."""

from __future__ import annotations

import logging
import shutil

import torch

from glm52_plugin.reference import Glm52ForCausalLM
from tests.checkpoint.conftest import copy_indexer_to_shared_layer, edit_tensors
from tests.conftest import prompt_ids


def test_shared_layer_indexer_tensors_are_ignored_with_a_warning(
    toy_checkpoints, toy_models, tmp_path, caplog
) -> None:
    path = tmp_path / "old-layout"
    shutil.copytree(toy_checkpoints[2], path)
    assert not toy_models[2].config.has_indexer(1)  # the 2-layer toy: layer 1 shares layer 0's

    edit_tensors(path, copy_indexer_to_shared_layer)
    with caplog.at_level(logging.WARNING, logger="glm52_plugin.checkpoint.reader"):
        model = Glm52ForCausalLM.from_pretrained(path, dtype=torch.float32, progress=False)
    warned = [r.message for r in caplog.records if "shared IndexShare layer" in r.message]
    assert warned, "no warning about the ignored tensors"
    assert all("model.layers.1.self_attn.indexer." in m for m in warned)
    ids = prompt_ids(24)
    assert torch.equal(model(ids), toy_models[2](ids))

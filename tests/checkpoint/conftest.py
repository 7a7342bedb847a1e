"""NVFP4 toy checkpoints written once per session, and a helper to corrupt copies of them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file


@pytest.fixture(scope="session")
def nvfp4_toys(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    from glm52_plugin.toy import make_toy

    root = tmp_path_factory.mktemp("nvfp4_toys")
    return {n: make_toy(root / f"toy{n}", layers=n, nvfp4=True, progress=False) for n in (2, 8)}


def shard_of(directory: Path, name: str) -> Path:
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    return directory / index["weight_map"][name]


def edit_tensors(directory: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    """Apply ``edit`` to the tensors of every shard (in place), rewriting shards and index."""
    index_file = directory / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    for file in sorted(set(index["weight_map"].values())):
        tensors = load_file(directory / file)
        before = set(tensors)
        edit(tensors)
        save_file(tensors, directory / file, {"format": "pt"})
        for gone in before - set(tensors):
            del index["weight_map"][gone]
        for new in set(tensors) - before:
            index["weight_map"][new] = file
    index_file.write_text(json.dumps(index))


@pytest.fixture
def copy_toy(nvfp4_toys: dict[int, Path], tmp_path: Path) -> Callable[[int], Path]:
    def copy(layers: int = 2) -> Path:
        out = tmp_path / f"toy{layers}"
        shutil.copytree(nvfp4_toys[layers], out)
        return out

    return copy


def copy_indexer_to_shared_layer(
    tensors: dict[str, torch.Tensor], src: int = 0, dst: int = 1
) -> None:
    """A pre-IndexShare layout: layer ``dst`` (shared in the 2-layer toy) carries an indexer too."""
    for name in [n for n in tensors if n.startswith(f"model.layers.{src}.self_attn.indexer.")]:
        tensors[name.replace(f"layers.{src}.", f"layers.{dst}.")] = tensors[name].clone()

"""Derive a test checkpoint from a toy: add tensors (as one extra shard) and drop others."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def edit_checkpoint(
    src: Path, dst: Path, add: dict[str, torch.Tensor] | None = None, drop: set[str] = frozenset()
) -> Path:
    shutil.copytree(src, dst)
    index_file = dst / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    weight_map = index["weight_map"]
    for fname in sorted({weight_map[n] for n in drop}):
        tensors = {k: v for k, v in load_file(dst / fname).items() if k not in drop}
        save_file(tensors, dst / fname, {"format": "pt"})
    for name in drop:
        del weight_map[name]
    if add:
        save_file(
            {k: v.contiguous() for k, v in add.items()}, dst / "extra.safetensors", {"format": "pt"}
        )
        weight_map.update(dict.fromkeys(add, "extra.safetensors"))
    index_file.write_text(json.dumps(index, indent=2))
    return dst


def read_tensors(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    index = json.loads((path / "model.safetensors.index.json").read_text())
    out = {}
    for fname in sorted(set(index["weight_map"].values())):
        out.update({k: v for k, v in load_file(path / fname).items() if k.startswith(prefix)})
    return out

"""Write a HF-layout checkpoint: sharded safetensors + index and JSON side files."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor
from tqdm import tqdm


def _shards(tensors: Mapping[str, Tensor], max_bytes: int) -> list[list[str]]:
    shards: list[list[str]] = [[]]
    size = 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n
    return shards


def write_checkpoint(
    directory: Path,
    tensors: Mapping[str, Tensor],
    json_files: Mapping[str, dict[str, Any]],
    max_shard_bytes: int = 2 << 20,
    progress: bool = True,
) -> None:
    """Shards ``tensors`` into ``model-0000i-of-0000n.safetensors`` with an index; writes json files."""
    groups = _shards(tensors, max_shard_bytes)
    weight_map: dict[str, str] = {}
    total = 0
    bar = tqdm(groups, desc=f"writing {directory.name}", unit="shard", disable=not progress)
    for i, names in enumerate(bar, 1):
        fname = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        save_file({n: tensors[n].contiguous() for n in names}, directory / fname, {"format": "pt"})
        for n in names:
            weight_map[n] = fname
            total += tensors[n].numel() * tensors[n].element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    for fname, content in {"model.safetensors.index.json": index, **json_files}.items():
        (directory / fname).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n")


@contextmanager
def atomic_directory(out: Path) -> Iterator[Path]:
    """Yield a temp dir beside ``out`` and rename it onto ``out`` on success, so a killed run
    never leaves a half-written checkpoint that a later run would reuse."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)

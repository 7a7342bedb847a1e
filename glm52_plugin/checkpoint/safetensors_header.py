"""safetensors headers without reading tensor data: an 8-byte little-endian length, then JSON.

Lets ``glm52 inspect`` read a 459 GB checkpoint in seconds and catches truncated files before
any tensor is loaded. Format: https://github.com/huggingface/safetensors (no pickle anywhere).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2,
            "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}  # fmt: skip
TORCH_DTYPE = {"U8": torch.uint8, "F8_E4M3": torch.float8_e4m3fn, "BF16": torch.bfloat16,
               "F16": torch.float16, "F32": torch.float32, "I32": torch.int32, "I64": torch.int64}  # fmt: skip
_MAX_HEADER = 100 << 20  # the safetensors library's own limit


class CheckpointError(ValueError):
    """A corrupt or inconsistent checkpoint; the message names the file and tensor."""


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    file: Path
    dtype: str  # safetensors dtype name, e.g. "BF16", "U8", "F8_E4M3"
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * ITEMSIZE.get(self.dtype, 0)


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Tensor name -> info for one .safetensors file; raises CheckpointError if it is truncated
    or malformed (naming the first tensor whose bytes lie past the end of the file)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated ({size} bytes, no safetensors header)")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or 8 + n > size:
            raise CheckpointError(
                f"{path}: truncated or not safetensors (header length {n}, file {size} bytes)"
            )
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: malformed safetensors header: {e}") from e
    out: dict[str, TensorInfo] = {}
    data_size = size - 8 - n
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = (
                entry["dtype"],
                tuple(entry["shape"]),
                entry["data_offsets"],
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: tensor {name}: malformed header entry") from e
        info = TensorInfo(name, path, dtype, shape)
        if dtype in ITEMSIZE and end - begin != info.nbytes:
            raise CheckpointError(
                f"{path}: tensor {name}: {end - begin} data bytes for {dtype} {list(shape)}"
            )
        if end > data_size:
            raise CheckpointError(
                f"{path}: truncated: tensor {name} ends at data byte {end}, "
                f"but the file holds only {data_size} data bytes"
            )
        out[name] = info
    return out


def shard_map(directory: Path) -> dict[str, Path]:
    """Tensor name -> file, from ``model.safetensors.index.json`` or a single file. Checks that
    each listed shard exists (naming a tensor that lives in a missing one)."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: unreadable index: {e}") from e
        out: dict[str, Path] = {}
        for name, fname in weight_map.items():
            file = directory / fname
            if not file.is_file():
                raise CheckpointError(
                    f"{index}: shard {fname} is missing (it should hold tensor {name})"
                )
            out[name] = file
        return out
    single = directory / "model.safetensors"
    if single.is_file():
        return {name: single for name in read_header(single)}
    raise CheckpointError(f"{directory}: no model.safetensors.index.json or model.safetensors")


def read_headers(directory: Path) -> dict[str, TensorInfo]:
    """All tensors of a checkpoint directory, cross-checked against its index."""
    listed = shard_map(directory)
    found: dict[str, TensorInfo] = {}
    for file in sorted(set(listed.values())):
        for name, info in read_header(file).items():
            if name in found:
                raise CheckpointError(f"{file}: tensor {name} also in {found[name].file.name}")
            found[name] = info
    for name, file in listed.items():
        if name not in found:
            raise CheckpointError(f"{file}: tensor {name} is in the index but not in this shard")
        if found[name].file != file:
            raise CheckpointError(
                f"{found[name].file}: tensor {name} is here, but the index says {file.name}"
            )
    extra = sorted(set(found) - set(listed))
    if extra:
        raise CheckpointError(f"{found[extra[0]].file}: tensor {extra[0]} is not in the index")
    return found

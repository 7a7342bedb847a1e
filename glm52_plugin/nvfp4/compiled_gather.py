"""The fast CPU path of ``codec.dequantize``: one table gather, compiled by Inductor into one loop.

An FP8 scale has only 256 bit patterns, so (scale byte, packed byte) fully determines the two
values a packed byte decodes to. A 65536-entry table holds both, computed by the codec's own
formula, so the results are the formula's bit for bit (tests/nvfp4/test_dequant_exhaustive.py
checks every pair). One gather per byte
then replaces unpack + lookup + multiply + cast passes, and ``torch.compile`` fuses
widen + or + gather + store into one loop over the packed bytes on torch's OpenMP threads.
Measured speed against a bf16 copy: benchmarks/README.md.

The flat byte stream is cut into rows of a fixed ``WIDTH`` (a multiple of the 8 bytes of a
block, so block j's scale byte is row-local): one compiled graph, dynamic only in the number of
rows, serves every weight shape. Compiling needs a C++ compiler (Inductor's) and takes seconds
once per process; where it fails, or for small tensors, ``dequantize`` returns None and the
codec's formula runs.
"""

from __future__ import annotations

import logging
import math
import threading

import torch
from torch import Tensor

from glm52_plugin.nvfp4.codec import dequantize_formula

log = logging.getLogger(__name__)

WIDTH = 512  # packed bytes per row: 64 blocks; 128-512 measured equal, 8-64 2x slower
# Below this many packed bytes the formula costs less than a compiled call's guards (and a toy
# checkpoint never waits for a compile).
MIN_BYTES = 1 << 20
_BLOCK_BYTES = 8
# dtype of the output -> integer dtype holding two of its values (one packed byte decodes to two)
PAIR_INT = {torch.bfloat16: torch.int32, torch.float16: torch.int32, torch.float32: torch.int64}

# one compile per process: "fn" the compiled gather, "ok" once it ran, "error" why it cannot
_state: dict[str, object] = {}
_lock = threading.Lock()


def decode_table(weight_scale_2: Tensor, dtype: torch.dtype) -> Tensor:
    """[256 scale bytes * 256 packed bytes] -> both decoded values of the byte as one integer
    (``PAIR_INT[dtype]``): entry ``byte | scale byte << 8``."""
    packed = torch.arange(256, dtype=torch.uint8).repeat(256, 1)  # row s: every byte
    scale = torch.arange(256, dtype=torch.uint8).view(256, 1).expand(256, 32)  # all s in row s
    scale = scale.contiguous().view(torch.float8_e4m3fn)
    values = dequantize_formula(packed, scale, weight_scale_2.cpu(), dtype)  # [s, byte * 2]
    return values.view(PAIR_INT[dtype]).reshape(-1)


def _gather_rows(table: Tensor, rows: Tensor, scales: Tensor, out: Tensor) -> None:
    """out[m, i] = table[rows[m, i] | scales[m, i // 8] << 8] (rows [M, WIDTH] uint8)."""
    m, blocks = rows.shape[0], WIDTH // _BLOCK_BYTES
    index = rows.view(m, blocks, _BLOCK_BYTES).to(torch.int32) | (
        scales.to(torch.int32).view(m, blocks, 1) << 8
    )
    # unsafe: a byte | byte << 8 is always inside the 65536-entry table, so Inductor's
    # per-element bounds check (a third of the loop) is dropped
    out.copy_(torch.ops.aten._unsafe_index.Tensor(table, [index.view(m, WIDTH)]))


def _compiled_gather(args: tuple[Tensor, ...]) -> bool:
    """Run the compiled gather on args; False (and never again) when it cannot compile."""
    for t in args[1:]:
        torch._dynamo.mark_dynamic(t, 0)  # one graph for every number of rows
    if "ok" in _state:
        _state["fn"](*args)
        return True
    with _lock:  # the first call compiles: once, and a failure turns the path off for good
        if "error" in _state:
            return False
        try:
            if "fn" not in _state:
                _state["fn"] = torch.compile(_gather_rows, dynamic=False, fullgraph=True)
            _state["fn"](*args)
        except Exception as exc:  # no C++ compiler, Inductor unsupported here, ...
            _state["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            log.warning(
                "NVFP4 dequant: torch.compile of the CPU gather failed (%s); using the formula "
                "(same values, slower)", _state["error"],
            )  # fmt: skip
            return False
        _state["ok"] = True
    return True


def dequantize(
    packed: Tensor,
    weight_scale: Tensor,
    weight_scale_2: Tensor,
    dtype: torch.dtype,
    out: Tensor | None = None,
) -> Tensor | None:
    """``codec.dequantize`` of checked inputs (into ``out`` when given: contiguous, the result's
    shape and dtype), or None where this path does not apply: not on CPU, an output dtype without
    a pair table, fewer than MIN_BYTES, inside a caller's torch.compile (Inductor fuses the
    formula itself there), or no compiler."""
    if (
        packed.device.type != "cpu"
        or dtype not in PAIR_INT
        or packed.numel() < max(MIN_BYTES, 2 * WIDTH)  # one row would specialise the graph
        or "error" in _state
        or torch.compiler.is_compiling()
    ):
        return None
    *lead, half = packed.shape
    n = math.prod(lead)
    flat = packed.reshape(n * half)  # blocks are 8 contiguous bytes whatever the row length
    scales = weight_scale.view(torch.uint8).reshape(-1)
    table = decode_table(weight_scale_2, dtype)
    result = out
    out = (
        torch.empty(flat.shape, dtype=table.dtype)
        if out is None
        else out.view(-1).view(table.dtype)
    )
    rows = flat.numel() // WIDTH
    done = rows * WIDTH
    args = (
        table,
        flat[:done].view(rows, WIDTH),
        scales[: done // _BLOCK_BYTES].view(rows, WIDTH // _BLOCK_BYTES),
        out[:done].view(rows, WIDTH),
    )
    if not _compiled_gather(args):
        return None
    if done < flat.numel():  # a tail of fewer than WIDTH bytes: the same table, eagerly
        tail = flat[done:].view(-1, _BLOCK_BYTES).to(torch.int32)
        index = tail | (scales[done // _BLOCK_BYTES :].to(torch.int32)[:, None] << 8)
        out[done:] = table[index.view(-1)]
    return out.view(dtype).reshape(*lead, half * 2) if result is None else result

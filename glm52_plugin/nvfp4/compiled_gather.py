"""The CPU dequant gather as one Inductor-generated C++ loop (``torch.compile``), when it can be.

Eager ATen needs four passes per chunk to build the int32 index ``byte | scale byte << 8`` and
gather (see codec._gather_rows); Inductor fuses widen + or + gather + store into one loop over
the packed bytes, run on torch's OpenMP threads, ~2x faster on 2 cores (benchmarks/README.md).
It is the same table and the same index, so the result is bit-identical to the eager path
(tests/nvfp4/test_dequant_exhaustive.py runs every (byte, scale byte) pair through both).

The flat byte stream is cut into rows of a fixed ``WIDTH`` (a multiple of the 8 bytes of a
block, so block j's scale byte is row-local): one compiled graph, dynamic only in the number of
rows, serves every weight shape. Compiling needs a C++ compiler (Inductor's); the first call
in a process pays ~9 s (importing Inductor ~4 s, then the compile, which Inductor's disk cache
shortens for later processes; 8-12 s cold). Without a compiler, or with
``GLM52_NVFP4_COMPILE=0``, ``gather`` returns 0 and the caller's eager path runs.
"""

from __future__ import annotations

import logging
import os
import threading

import torch
from torch import Tensor

log = logging.getLogger(__name__)

ENV = "GLM52_NVFP4_COMPILE"
WIDTH = 512  # packed bytes per row: 64 blocks; 128-512 measured equal, 8-64 2x slower
# Below this many packed bytes the eager path is faster than a compiled call's guards (and a
# toy checkpoint never waits for a compile).
MIN_BYTES = 1 << 20
_BLOCK_BYTES = 8

_state: dict[str, object] = {}  # "fn": the compiled function, "error": why it is unavailable
_lock = threading.Lock()


def block_index(codes: Tensor, scales: Tensor) -> Tensor:
    """int32 index into codec's decode table of each packed byte: byte | its block's scale
    byte << 8 (codes uint8 [..., B, 8], scales uint8 [..., B])."""
    return codes.to(torch.int32) | (scales.to(torch.int32).unsqueeze(-1) << 8)


def _gather_rows(table: Tensor, rows: Tensor, scales: Tensor, out: Tensor) -> None:
    """out[m, i] = table[rows[m, i] | scales[m, i // 8] << 8] (rows [M, WIDTH] uint8)."""
    m, blocks = rows.shape[0], WIDTH // _BLOCK_BYTES
    index = block_index(rows.view(m, blocks, _BLOCK_BYTES), scales.view(m, blocks)).view(m, WIDTH)
    # unsafe: a byte | byte << 8 is always inside the 65536-entry table, so Inductor's
    # per-element bounds check (a third of the loop) is dropped
    out.copy_(torch.ops.aten._unsafe_index.Tensor(table, [index]))


def enabled() -> bool:
    return os.environ.get(ENV, "1") != "0" and "error" not in _state


def _compiled():
    fn = _state.get("fn")
    if fn is None:
        fn = _state["fn"] = torch.compile(_gather_rows, dynamic=False, fullgraph=True)
    return fn


def gather(table: Tensor, packed: Tensor, scales: Tensor, out: Tensor) -> int:
    """Fill ``out[:done]`` for flat contiguous CPU ``packed`` bytes / ``scales`` bytes / ``out``
    (table dtype); return ``done``, the bytes handled (whole WIDTH rows; 0 when the compiled
    path is off, unavailable or not worth it). The caller does ``[done:]`` eagerly."""
    rows = packed.numel() // WIDTH
    # (a single row would make Inductor specialise the dynamic dimension to 1)
    if rows < 2 or rows * WIDTH < MIN_BYTES or not enabled():
        return 0
    done = rows * WIDTH
    args = (
        table,
        packed[:done].view(rows, WIDTH),
        scales[: done // _BLOCK_BYTES].view(rows, WIDTH // _BLOCK_BYTES),
        out[:done].view(rows, WIDTH),
    )
    for t in args[1:]:
        torch._dynamo.mark_dynamic(t, 0)  # one graph for every number of rows
    if "ok" in _state:
        _compiled()(*args)
        return done
    with _lock:  # the first call compiles: once, and a failure turns the path off for good
        if "error" in _state:
            return 0
        try:
            _compiled()(*args)
        except Exception as exc:  # no C++ compiler, Inductor unsupported here, ...
            _state["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            log.warning(
                "NVFP4 dequant: torch.compile of the CPU gather failed (%s); using the eager "
                "path (same values, ~2x slower). Set %s=0 to skip the attempt.",
                _state["error"],
                ENV,
            )
            return 0
        _state["ok"] = True
    return done

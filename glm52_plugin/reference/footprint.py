"""How much memory the in-memory reference needs for a checkpoint, and how much this host has.

Both from cheap sources (safetensors headers, /proc/meminfo), so ``glm52 generate`` and
``glm52 verify`` can refuse or stream before loading anything.
"""

from __future__ import annotations

import os
from pathlib import Path

from glm52_plugin.checkpoint.safetensors_header import read_headers

_NVFP4_SCALES = ("weight_scale", "weight_scale_2", "input_scale")


def weight_bytes_in_memory(
    path: str | Path, bytes_per_value: int, packed_experts: bool = False
) -> int:
    """What the reference model's weights take once loaded, from the safetensors headers:
    every value at ``bytes_per_value``, NVFP4 codes (uint8, two values a byte) dequantised and
    their scales dropped, unless ``packed_experts`` keeps the routed experts packed (codes and
    scales as stored)."""
    total = 0
    for name, info in read_headers(Path(path)).items():
        packed = packed_experts and ".mlp.experts." in name  # only routed experts stay packed
        if packed and (info.dtype == "U8" or name.endswith(_NVFP4_SCALES)):
            total += info.nbytes
        elif info.dtype == "U8":
            total += 2 * info.numel * bytes_per_value
        elif not name.endswith(_NVFP4_SCALES):
            total += info.numel * bytes_per_value
    return total


def available_memory_bytes() -> int:
    """Memory this process could take now: MemAvailable on Linux, else physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")

"""GPU memory sizes for the deployment planner (vendor datasheets; usable HBM as the OS sees it)."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Gpu:
    name: str
    memory_gb: float  # decimal GB of device memory
    nvfp4: bool  # native NVFP4 tensor cores (Blackwell); else Marlin W4A16 dequant in-kernel
    sm: int  # CUDA compute capability major * 10 + minor: what the engines key their defaults on
    note: str

    @property
    def sm_major(self) -> int:
        return self.sm // 10


GPUS = {
    g.name: g
    for g in (
        Gpu("B200", 180.0, True, 100, "SM100; HGX/DGX B200 expose 180 GB per GPU"),
        Gpu("B300", 288.0, True, 103, "SM103 (Blackwell Ultra)"),
        Gpu("GB200", 186.0, True, 100, "SM100; NVL72 13.4 TB / 72 GPUs"),
        Gpu("H100", 80.0, False, 90, "SM90; NVFP4 via Marlin W4A16 (vllm#49070 reports garbage)"),
        Gpu("H200", 141.0, False, 90, "SM90; NVFP4 via Marlin W4A16"),
        Gpu("RTX PRO 6000", 96.0, True, 120, "SM120 Blackwell workstation/server edition"),
    )
}


def _key(name: str) -> str:
    # "rtx-pro-6000", "RTX_PRO_6000" and "rtx pro 6000" all name the same card
    return re.sub(r"[\s_-]+", "", name).casefold()


_BY_KEY = {_key(name): gpu for name, gpu in GPUS.items()}


def find_gpu(name: str) -> Gpu:
    """The GPU called ``name``, ignoring case, spaces, hyphens and underscores."""
    try:
        return _BY_KEY[_key(name)]
    except KeyError:
        raise ValueError(f"unknown GPU {name!r}; choose from {', '.join(GPUS)}") from None

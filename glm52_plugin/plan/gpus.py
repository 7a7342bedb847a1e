"""GPU memory sizes for the deployment planner (vendor datasheets; usable HBM as the OS sees it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Gpu:
    name: str
    memory_gb: float  # decimal GB of device memory
    nvfp4: bool  # native NVFP4 tensor cores (Blackwell); else Marlin W4A16 dequant in-kernel
    note: str


GPUS = {
    g.name: g
    for g in (
        Gpu("B200", 180.0, True, "SM100; HGX/DGX B200 expose 180 GB per GPU"),
        Gpu("B300", 288.0, True, "SM103 (Blackwell Ultra)"),
        Gpu("GB200", 186.0, True, "SM100; NVL72 13.4 TB / 72 GPUs"),
        Gpu("H100", 80.0, False, "SM90; NVFP4 via Marlin W4A16 (vllm#49070 reports garbage)"),
        Gpu("H200", 141.0, False, "SM90; NVFP4 via Marlin W4A16"),
        Gpu("RTX PRO 6000", 96.0, True, "SM120 Blackwell workstation/server edition"),
    )
}

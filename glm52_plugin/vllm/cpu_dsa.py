"""The fused CPU DSA kernels (``csrc/cpu_dsa.cpp``): indexer top-k and sparse MLA in one call each.

At decode sizes the eager DSA of ``sparse_mla`` is ~30 torch ops per layer and step, each
costing 5-60 us whatever its work; vLLM's in-tree dense MLA on CPU is one C++ call. These two
ops do the same math as the eager path straight from vLLM's block table, query_start_loc and
paged caches. They are compiled on first use with torch's C++ extension builder for the host's
own instruction set (hence the CPU flags in the build name) and cached under
``TORCH_EXTENSIONS_DIR``. Without a C++ compiler, or with ``GLM52_CPU_DSA_KERNEL=0``, callers
get ``None`` and stay on the eager path (same math, tests/vllm/test_cpu_dsa.py compares them).
"""

from __future__ import annotations

import hashlib
import logging
import platform
import threading
from collections.abc import Callable
from pathlib import Path

import torch

from glm52_plugin.env import env_flag

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "cpu_dsa.cpp"
ENV_SWITCH = "GLM52_CPU_DSA_KERNEL"
_lock = threading.Lock()
_state: dict[str, object] = {"tried": False, "ops": None, "error": None}


def _host_flags() -> str:
    # -march=native code must not be reused on a CPU with fewer instructions
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_name() -> str:
    digest = hashlib.sha256(SOURCE.read_bytes() + _host_flags().encode()).hexdigest()[:12]
    return f"glm52_cpu_dsa_{digest}"


def kernels(announce: Callable[[str], None] = logger.info) -> object | None:
    """``torch.ops.glm52_cpu_dsa`` (index_topk, sparse_mla), or None when off or unbuildable.

    ``announce`` gets one line before a build starts (the engine adapter routes it to vLLM's
    log, where this module's INFO lines would be dropped).
    """
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            if not env_flag(ENV_SWITCH, default=True):
                return None
            try:
                _build(announce)
                _state["ops"] = torch.ops.glm52_cpu_dsa
            except Exception as exc:  # no compiler, no ninja, unsupported host: eager path
                _state["error"] = exc
                logger.warning(
                    "glm52: fused CPU DSA kernels unavailable (%s: %s); using eager torch ops",
                    type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "",
                )  # fmt: skip
        return _state["ops"]


def build_error() -> str:
    """Why ``kernels()`` returned None ("" when it did not, or was switched off)."""
    error = _state["error"]
    return f"{type(error).__name__}: {error}" if error is not None else ""


def _build(announce: Callable[[str], None]) -> None:
    from torch.utils.cpp_extension import load

    name = build_name()
    if not _is_built(name):
        announce(f"glm52_plugin: building the fused CPU DSA kernels {name} (once per host, ~30 s)")
    load(
        name=name,
        sources=[str(SOURCE)],
        extra_cflags=["-O3", "-march=native", "-fopenmp-simd", "-mprefer-vector-width=512"],
        is_python_module=False,
        verbose=False,
    )


def _is_built(name: str) -> bool:
    try:  # torch's own build-directory rule (private: any failure just means "announce")
        from torch.utils.cpp_extension import _get_build_directory

        return (Path(_get_build_directory(name, verbose=False)) / f"{name}.so").is_file()
    except Exception:
        return False

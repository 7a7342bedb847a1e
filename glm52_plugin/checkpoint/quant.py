"""ModelOpt quantization descriptions and vLLM's per-module exclusion rules.

Reads ``hf_quant_config.json`` (legacy) and ``config.json`` ``quantization_config``
(``quant_method: modelopt``) as vLLM 0.33 ``ModelOptQuantConfigBase.from_config`` does, and
resolves a module's precision as ``ModelOptQuantConfigBase.is_layer_excluded``: exact name, then
legacy substring, then ``fnmatch`` wildcard. Spec: ``architecture.md`` 10.1, ``vllm.md`` 7.1-7.2.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from glm52_plugin.checkpoint.names import fused_partner

SUPPORTED_ALGOS = ("NVFP4",)


class QuantConfigError(ValueError):
    """An unusable or inconsistent quantization description."""


@dataclass(frozen=True, slots=True)
class QuantConfig:
    """ModelOpt NVFP4 description; ``exclude`` holds module-name globs kept unquantized."""

    algo: str
    group_size: int
    exclude: tuple[str, ...]
    kv_cache_algo: str | None
    source: str  # file (and key) it was read from

    def is_excluded(self, module: str) -> bool:
        """vLLM ``is_layer_excluded`` for one unfused checkpoint module (e.g. ``...gate_proj``)."""
        if module in self.exclude:  # 1. exact
            return True
        for pattern in self.exclude:  # 2. legacy substring (ModelOpt < 0.39 lists)
            if pattern != module and (
                pattern in module
                or (
                    module.startswith("language_model.")
                    and pattern in module.removeprefix("language_model.")
                )
            ):
                return True
        return any(fnmatch(module, p) for p in self.exclude)  # 3. wildcard

    def is_quantized(self, module: str) -> bool:
        """Resolved precision of a module, requiring fused shards to agree (vLLM raises
        "some but not all shards quantized" when they don't)."""
        excluded = self.is_excluded(module)
        partner = fused_partner(module)
        if partner is not None and self.is_excluded(partner) != excluded:
            q, u = (partner, module) if excluded else (module, partner)
            raise QuantConfigError(
                f"{self.source}: exclude list quantizes {q} but not {u}; engines fuse them into "
                f"one layer, so both must be quantized or both excluded"
            )
        return not excluded


def _algo(d: Mapping[str, Any], source: str) -> str:
    algo = d.get("quant_algo")
    if not algo:
        raise QuantConfigError(f"{source}: missing 'quant_algo'")
    algo = str(algo).upper()
    if algo not in SUPPORTED_ALGOS:
        raise QuantConfigError(
            f"{source}: quant_algo {algo!r} unsupported (want {SUPPORTED_ALGOS})"
        )
    return algo


def _exclude(d: Mapping[str, Any], source: str) -> tuple[str, ...]:
    # vLLM reads exclude_modules from hf_quant_config.json and ignore from config.json;
    # ModelOpt has written both keys in both places over time, so accept either (spec 10.1)
    value = d.get("exclude_modules", d.get("ignore", []))
    if value is None:
        value = []
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise QuantConfigError(f"{source}: exclude_modules/ignore must be a list of strings")
    return tuple(value)


def _group_size(d: Mapping[str, Any], source: str) -> int:
    size = d.get("group_size")
    if size is None:  # compressed-tensors style keeps it per config group
        groups = d.get("config_groups") or {}
        sizes = {g.get("weights", {}).get("group_size") for g in groups.values()} - {None}
        if len(sizes) > 1:
            raise QuantConfigError(f"{source}: config_groups disagree on group_size: {sizes}")
        size = sizes.pop() if sizes else 16
    if int(size) != 16:
        raise QuantConfigError(f"{source}: NVFP4 group_size must be 16, got {size}")
    return 16


def from_hf_quant_config(d: Mapping[str, Any], source: str = "hf_quant_config.json") -> QuantConfig:
    q = d.get("quantization")
    if not isinstance(q, dict):
        raise QuantConfigError(f"{source}: expected a 'quantization' object")
    kv = q.get("kv_cache_quant_algo")
    return QuantConfig(_algo(q, source), _group_size(q, source), _exclude(q, source),
                       str(kv).upper() if kv else None, source)  # fmt: skip


def from_quantization_config(
    d: Mapping[str, Any], source: str = "config.json quantization_config"
) -> QuantConfig:
    if "quantization" in d:  # a nested legacy object is accepted by vLLM too
        return from_hf_quant_config(d, source)
    method = str(d.get("quant_method", ""))
    if not method.lower().startswith("modelopt"):
        raise QuantConfigError(f"{source}: quant_method {method!r} is not modelopt")
    kv_scheme = d.get("kv_cache_scheme")
    kv = d.get("kv_cache_quant_algo")
    if isinstance(kv_scheme, dict) and kv_scheme.get("type") == "float":
        kv = "FP8" if kv_scheme.get("num_bits") == 8 else kv
    return QuantConfig(_algo(d, source), _group_size(d, source), _exclude(d, source),
                       str(kv).upper() if kv else None, source)  # fmt: skip


def read_quant_config(directory: Path, config: Mapping[str, Any]) -> QuantConfig | None:
    """The checkpoint's quantization, or None for BF16. With both descriptions present they must
    agree on algorithm and exclude set (an engine reads only one of them)."""
    found: list[QuantConfig] = []
    hf = directory / "hf_quant_config.json"
    if hf.is_file():
        try:
            found.append(from_hf_quant_config(json.loads(hf.read_text()), str(hf)))
        except json.JSONDecodeError as e:
            raise QuantConfigError(f"{hf}: invalid JSON: {e}") from e
    if config.get("quantization_config"):
        found.append(
            from_quantization_config(
                config["quantization_config"], f"{directory / 'config.json'} quantization_config"
            )
        )
    if not found:
        return None
    first = found[0]
    for other in found[1:]:
        if other.algo != first.algo or set(other.exclude) != set(first.exclude):
            raise QuantConfigError(
                f"{first.source} and {other.source} disagree "
                f"(algo {first.algo} vs {other.algo}, "
                f"exclude only in one: {sorted(set(first.exclude) ^ set(other.exclude))[:5]})"
            )
    return first

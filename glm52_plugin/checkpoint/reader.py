"""Stream a HF-layout GLM-5.2 checkpoint (BF16 or ModelOpt NVFP4) as reference-model tensors.

Headers are validated first (names, shapes, dtypes, NVFP4 parts, exclusions); then shards are
read one at a time and each NVFP4 linear is dequantised as soon as its parts are in, so memory
holds the output model plus at most one shard's pending parts, never a second model copy.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor
from tqdm import tqdm

from glm52_plugin.checkpoint.names import layer_of, split_nvfp4
from glm52_plugin.checkpoint.quant import QuantConfig, QuantConfigError, read_quant_config
from glm52_plugin.checkpoint.safetensors_header import CheckpointError, TensorInfo, read_headers
from glm52_plugin.checkpoint.validate import Report, validate
from glm52_plugin.config import ConfigError, Glm52Config
from glm52_plugin.nvfp4 import PackedWeight

log = logging.getLogger(__name__)
MAX_LISTED = 10
# ATen's at::internal::GRAIN_SIZE: smaller ops run inline instead of waking OpenMP threads
_INLINE_ELEMENTS = 32767


def _has_nan_e4m3(scale: Tensor) -> bool:
    """Whether any FP8-E4M3 (fn) scale is NaN, i.e. isfinite(scale.float()) is not all true.

    e4m3fn has no Inf and one NaN pattern per sign (S.1111.111), so the bytes are tested
    directly instead of widening every scale to fp32; in slices small enough to run inline,
    because between dequantisations the OpenMP threads are asleep, and waking them three
    times per tensor on a busy machine cost more than the dequantisation itself.
    """
    flat = scale.view(torch.uint8).reshape(-1)
    for i in range(0, flat.numel(), _INLINE_ELEMENTS):
        part = flat[i : i + _INLINE_ELEMENTS]
        # calibrated scales are positive and finite, i.e. bytes < 0x7F: one reduction clears
        # them; only a slice with a sign bit or a NaN needs the exact test
        if int(part.max()) >= 0x7F and ((part & 0x7F) == 0x7F).any():
            return True
    return False


@dataclass(slots=True)
class Checkpoint:
    directory: Path
    config: Glm52Config
    raw_config: dict[str, Any]
    quant: QuantConfig | None
    tensors: dict[str, TensorInfo]

    @classmethod
    def open(cls, directory: str | Path) -> Checkpoint:
        """Read config, quantization description and all safetensors headers (no tensor data)."""
        directory = Path(directory)
        cfg_file = directory / "config.json"
        try:
            raw = json.loads(cfg_file.read_text())
            cfg = Glm52Config.from_dict(raw)
        except (OSError, json.JSONDecodeError, ConfigError) as e:
            raise CheckpointError(f"{cfg_file}: {e}") from e
        try:
            quant = read_quant_config(directory, raw)
        except QuantConfigError as e:
            raise CheckpointError(str(e)) from e
        return cls(directory, cfg, raw, quant, read_headers(directory))

    def report(self) -> Report:
        return validate(self.config, self.tensors, self.quant)

    def check(self, warn_shared_indexer: bool = True) -> Report:
        """The report, or CheckpointError listing its errors. Warnings are logged, those about
        indexer tensors on shared IndexShare layers as one line (a pre-IndexShare checkpoint
        has hundreds); ``warn_shared_indexer=False`` leaves them to an engine adapter's own
        weight filter, which reports them while loading."""
        report = self.report()
        if report.errors:
            lines = [str(i) for i in report.errors[:MAX_LISTED]]
            more = len(report.errors) - len(lines)
            raise CheckpointError(
                f"{self.directory}: {len(report.errors)} problem(s):\n  " + "\n  ".join(lines)
                + (f"\n  ... and {more} more" if more > 0 else "")
            )  # fmt: skip
        shared = {n for n in report.ignored if ".self_attn.indexer." in n}
        for issue in report.issues:
            if issue.tensor not in shared:
                log.warning("%s", issue)
        if shared and warn_shared_indexer:
            layers = sorted({layer_of(n) for n in shared})
            log.warning("%s: ignoring %d indexer tensor(s) on shared IndexShare layers %s (the "
                        "config's schedule builds no indexer there), e.g. %s", self.directory,
                        len(shared), layers, min(shared))  # fmt: skip
        return report

    def stream(
        self,
        dtype: torch.dtype,
        progress: bool = True,
        keep_packed: Callable[[str], bool] | None = None,
    ) -> Iterator[tuple[str, Tensor | PackedWeight]]:
        """Yield (reference-model name, tensor) shard by shard; NVFP4 weights come dequantised to
        ``dtype``, other tensors in their stored dtype. NVFP4 modules for which ``keep_packed``
        (given the module name) is true come as a checked :class:`PackedWeight` instead."""
        report = self.check()
        skip = set(report.ignored)
        nvfp4 = set(report.nvfp4_modules)
        parts_of: dict[str, set[str]] = {m: set() for m in nvfp4}
        owner: dict[str, tuple[str, str]] = {}
        for name in self.tensors:
            split = split_nvfp4(name) or (name.removesuffix(".weight"), "weight")
            if split[0] in nvfp4 and name not in skip:
                owner[name] = split
                parts_of[split[0]].add(split[1])
        pending: dict[str, dict[str, Tensor]] = {}
        files = sorted({info.file for info in self.tensors.values()})
        for file in tqdm(files, desc="loading shards", unit="shard", disable=not progress):
            with safe_open(file, framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                    if name in skip:
                        continue
                    tensor = f.get_tensor(name)
                    if name not in owner:
                        yield name, tensor
                        continue
                    module, part = owner[name]
                    got = pending.setdefault(module, {})
                    got[part] = tensor
                    if set(got) == parts_of[module]:
                        del pending[module]
                        packed = keep_packed is not None and keep_packed(module)
                        yield f"{module}.weight", self._checked(module, got, dtype, packed)
        if pending:  # headers promised these parts; only a header/data mismatch gets here
            raise CheckpointError(
                f"{self.directory}: incomplete NVFP4 tensors {sorted(pending)[:5]}"
            )

    def _checked(
        self, module: str, parts: dict[str, Tensor], dtype: torch.dtype, packed: bool
    ) -> Tensor | PackedWeight:
        """The NVFP4 linear's parts, scales checked, dequantised to ``dtype`` unless ``packed``."""

        def where(part: str) -> str:
            return f"{self.tensors[f'{module}.{part}'].file}: {module}.{part}"

        if _has_nan_e4m3(parts["weight_scale"]):
            raise CheckpointError(f"{where('weight_scale')}: NaN/Inf block scales")
        for part in ("weight_scale_2", "input_scale"):
            if part in parts:
                v = parts[part].float()
                if not (torch.isfinite(v).all() and (v > 0).all()):
                    raise CheckpointError(
                        f"{where(part)}: {v.tolist()} is not a finite positive scale"
                    )
        weight = PackedWeight(
            parts["weight"], parts["weight_scale"], parts["weight_scale_2"].reshape(())
        )
        return weight if packed else weight.dequantize(dtype)

"""Stream a HF-layout GLM-5.2 checkpoint (BF16 or ModelOpt NVFP4): the one checkpoint reader.

Headers are validated first (names, shapes, dtypes, NVFP4 parts, exclusions); then tensors are
read from their files on demand, all of them or only a given subset (one decoder layer's, for the
layer-streaming reference), and each NVFP4 linear comes as one item as soon as its parts are in,
with its scales checked once (:func:`group_nvfp4`, which the vLLM weight stream uses too). Memory
holds what the caller keeps plus at most one file's pending NVFP4 parts, never a second copy.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor
from tqdm import tqdm

from glm52_plugin.checkpoint.names import (
    NVFP4_REQUIRED,
    is_shared_indexer,
    layer_of,
    nvfp4_part,
)
from glm52_plugin.checkpoint.quant import QuantConfig, QuantConfigError, read_quant_config
from glm52_plugin.checkpoint.safetensors_header import CheckpointError, TensorInfo, read_headers
from glm52_plugin.checkpoint.validate import Report, resolve_mtp, validate
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


def checked_nvfp4(
    module: str, parts: Mapping[str, Tensor], where: Callable[[str], str] = str
) -> PackedWeight:
    """An NVFP4 linear's parts as one :class:`PackedWeight`, its scales checked: e4m3 block
    scales free of NaN, ``weight_scale_2`` (and ``input_scale``, when given) finite and positive.
    ``where(tensor name)`` says where a bad tensor lives in the message (e.g. its file)."""
    missing = [p for p in NVFP4_REQUIRED if p not in parts]
    if missing:
        raise CheckpointError(f"{where(f'{module}.weight')}: NVFP4 linear lacks {missing}")
    if _has_nan_e4m3(parts["weight_scale"]):
        raise CheckpointError(f"{where(f'{module}.weight_scale')}: NaN/Inf block scales")
    for part in ("weight_scale_2", "input_scale"):
        if part in parts:
            v = parts[part].float()
            if not (torch.isfinite(v).all() and (v > 0).all()):
                raise CheckpointError(
                    f"{where(f'{module}.{part}')}: {v.tolist()} is not a finite positive scale"
                )
    try:
        return PackedWeight(
            parts["weight"], parts["weight_scale"], parts["weight_scale_2"].reshape(())
        )
    except (ValueError, RuntimeError) as e:
        raise CheckpointError(f"{where(f'{module}.weight')}: unusable NVFP4 tensors: {e}") from e


def group_nvfp4(
    pairs: Iterable[tuple[str, Tensor]],
    expected: Mapping[str, Collection[str]] | None = None,
    where: Callable[[str], str] = str,
) -> Iterator[tuple[str, Tensor | PackedWeight]]:
    """Pass plain tensors through; collect each NVFP4 linear's parts (:func:`names.nvfp4_part`)
    and yield ``(module.weight, checked PackedWeight)`` once they are all in.

    ``expected`` (module -> its parts, from the headers) says when a module is complete. Without
    it (a stream whose headers are not at hand, e.g. vLLM's), a module is complete with its
    three required parts, and an ``input_scale`` arriving after them is dropped: it only
    matters to W4A4 emulation, which reads it from the checkpoint itself.
    A module still incomplete when the stream ends is a CheckpointError.
    """
    pending: dict[str, dict[str, Tensor]] = {}
    for name, tensor in pairs:
        split = nvfp4_part(name, tensor.dtype == torch.uint8)
        if split is None or (expected is not None and split[0] not in expected):
            yield name, tensor
            continue
        module, part = split
        got = pending.setdefault(module, {})
        got[part] = tensor
        want = expected[module] if expected is not None else NVFP4_REQUIRED
        if all(p in got for p in want):
            yield f"{module}.weight", checked_nvfp4(module, pending.pop(module), where)
    # without headers an input_scale read after its module completed is left alone (see above)
    incomplete = sorted(m for m, got in pending.items() if set(got) - {"input_scale"})
    if incomplete:
        module = incomplete[0]
        missing = [p for p in NVFP4_REQUIRED if p not in pending[module]]
        raise CheckpointError(
            f"{where(f'{module}.weight')}: NVFP4 linear lacks {missing} "
            f"({len(incomplete)} NVFP4 linear(s) incomplete)"
        )


@dataclass(slots=True)
class Checkpoint:
    directory: Path
    config: Glm52Config
    raw_config: dict[str, Any]
    quant: QuantConfig | None
    tensors: dict[str, TensorInfo]
    _report: Report | None = field(default=None, repr=False)

    @classmethod
    def open(cls, directory: str | Path) -> Checkpoint:
        """Read config, quantization description and all safetensors headers (no tensor data).
        Whether there is an MTP layer follows the tensors (``validate.resolve_mtp``)."""
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
        tensors = read_headers(directory)
        return cls(directory, resolve_mtp(cfg, tensors), raw, quant, tensors)

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
        shared = {n for n in report.ignored if is_shared_indexer(n, self.config)}
        for issue in report.issues:
            if issue.tensor not in shared:
                log.warning("%s", issue)
        if shared and warn_shared_indexer:
            layers = sorted({layer_of(n) for n in shared})
            log.warning("%s: ignoring %d indexer tensor(s) on shared IndexShare layers %s (the "
                        "config's schedule builds no indexer there), e.g. %s", self.directory,
                        len(shared), layers, min(shared))  # fmt: skip
        return report

    def checked_report(self) -> Report:
        """:meth:`check`, run (and its warnings logged) once per Checkpoint."""
        if self._report is None:
            self._report = self.check()
        return self._report

    def loadable(self) -> list[str]:
        """Names of the tensors a model loads, in header order: all but the ignored ones
        (indexer tensors of shared IndexShare layers, FP8 KV-cache scales)."""
        skip = set(self.checked_report().ignored)
        return [n for n in self.tensors if n not in skip]

    def layer_tensors(self, layer: int) -> list[str]:
        """The loadable tensor names of decoder layer ``layer`` (``model.layers.{layer}.*``)."""
        return [n for n in self.loadable() if layer_of(n) == layer]

    def nvfp4_parts(self) -> dict[str, set[str]]:
        """NVFP4 module -> the parts its headers hold (the grouping :meth:`stream` completes)."""
        report = self.checked_report()
        modules = set(report.nvfp4_modules)
        out: dict[str, set[str]] = {m: set() for m in modules}
        skip = set(report.ignored)
        for name, info in self.tensors.items():
            split = nvfp4_part(name, info.dtype == "U8")
            if split is not None and split[0] in modules and name not in skip:
                out[split[0]].add(split[1])
        return out

    def read(self, names: Iterable[str]) -> Iterator[tuple[str, Tensor]]:
        """Raw tensors ``names`` from their files (each file opened once), in the given order
        within a file; nothing is grouped or checked. A name not in the checkpoint is a
        CheckpointError naming it."""
        by_file: dict[Path, list[str]] = {}
        for name in names:
            info = self.tensors.get(name)
            if info is None:
                raise CheckpointError(f"{self.directory}: no tensor {name} in the checkpoint")
            by_file.setdefault(info.file, []).append(name)
        for file, file_names in by_file.items():
            with safe_open(file, framework="pt") as f:
                for name in file_names:
                    yield name, f.get_tensor(name)

    def stream(
        self,
        dtype: torch.dtype | None = None,
        progress: bool = True,
        keep_packed: Callable[[str], bool] | None = None,
        names: Iterable[str] | None = None,
    ) -> Iterator[tuple[str, Tensor | PackedWeight]]:
        """Yield (reference-model name, tensor) file by file, for every loadable tensor or only
        ``names`` (checkpoint names: all parts of an NVFP4 linear must be among them).

        Plain tensors come in their stored dtype. An NVFP4 linear comes as one item
        ``module.weight``: dequantised to ``dtype``, or as its checked :class:`PackedWeight`
        when ``dtype`` is None or ``keep_packed(module)`` is true.
        """
        expected = self.nvfp4_parts()
        wanted = self.loadable() if names is None else list(names)
        files = sorted({self.tensors[n].file for n in wanted if n in self.tensors})
        bar = tqdm(total=len(files), desc="loading shards", unit="shard", disable=not progress)

        def where(name: str) -> str:
            info = self.tensors.get(name)
            return f"{info.file}: {name}" if info is not None else f"{self.directory}: {name}"

        def raw() -> Iterator[tuple[str, Tensor]]:
            last: Path | None = None
            for name, tensor in self.read(wanted):
                if self.tensors[name].file != last:
                    bar.update(last is not None)
                    last = self.tensors[name].file
                yield name, tensor
            bar.update(last is not None)
            bar.close()

        for name, item in group_nvfp4(raw(), expected, where):
            if isinstance(item, PackedWeight):
                module = name.removesuffix(".weight")
                if dtype is not None and not (keep_packed is not None and keep_packed(module)):
                    item = item.dequantize(dtype)
            yield name, item

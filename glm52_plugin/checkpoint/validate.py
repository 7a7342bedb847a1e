"""Check a checkpoint's headers against the config: names, shapes, dtypes, NVFP4 parts, precisions.

Works on headers only (``safetensors_header``), so it is as cheap for 459 GB as for a toy.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from glm52_plugin.checkpoint.names import (
    TensorSpec,
    expected_tensors,
    is_kv_scale,
    is_shared_indexer,
    layer_of,
    nvfp4_part,
)
from glm52_plugin.checkpoint.quant import QuantConfig, QuantConfigError
from glm52_plugin.checkpoint.safetensors_header import TensorInfo
from glm52_plugin.config import Glm52Config

Level = Literal["error", "warning"]
# vLLM builds these with quant_config=None whatever the exclude list says (router GateLinear,
# the indexer's fused wk_weights_proj): they are BF16 in every ModelOpt checkpoint.
NEVER_QUANTIZED = (".mlp.gate", ".indexer.wk", ".indexer.weights_proj")
PRECISION = {"U8": "NVFP4", "BF16": "BF16", "F32": "FP32", "F16": "FP16", "F8_E4M3": "FP8"}


@dataclass(frozen=True, slots=True)
class Issue:
    level: Level
    where: str  # "file: tensor" or a file
    message: str
    tensor: str | None = None  # the tensor concerned, when there is one

    def __str__(self) -> str:
        return f"{self.level}: {self.where}: {self.message}"


@dataclass(slots=True)
class Report:
    """What a checkpoint holds, by module group and precision."""

    issues: list[Issue] = field(default_factory=list)
    # group -> precision -> [params, bytes]
    precision: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    nvfp4_modules: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # present, skipped on load (shared indexer)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.level == "error"]

    def add(self, group: str, precision: str, params: int, nbytes: int) -> None:
        slot = self.precision.setdefault(group, {}).setdefault(precision, [0, 0])
        slot[0] += params
        slot[1] += nbytes


def _where(info: TensorInfo | None, name: str) -> str:
    return f"{info.file.name}: {name}" if info else name


def _tensor_issue(level: Level, info: TensorInfo | None, name: str, message: str) -> Issue:
    return Issue(level, _where(info, name), message, name)


def _check_plain(r: Report, name: str, spec: TensorSpec, info: TensorInfo) -> None:
    if info.shape != spec.shape:
        r.issues.append(
            _tensor_issue(
                "error", info, name, f"shape {list(info.shape)}, expected {list(spec.shape)}"
            )
        )
    # F32 where BF16 is expected is a lossless widening every loader casts back, and what
    # transformers writes for the modules it keeps in fp32 (5.25: mlp.gate.weight): accepted.
    widened = info.dtype == "F32" and "BF16" in spec.dtypes
    if info.dtype not in spec.dtypes and not widened:
        # float-to-float differences still load (the loader casts); anything else cannot
        level: Level = "warning" if info.dtype in ("F32", "F16", "BF16") else "error"
        r.issues.append(
            _tensor_issue(
                level, info, name, f"dtype {info.dtype}, expected {'/'.join(spec.dtypes)}"
            )
        )
    r.add(spec.group, PRECISION.get(info.dtype, info.dtype), info.numel, info.nbytes)


def _check_nvfp4(
    r: Report, module: str, spec: TensorSpec, parts: dict[str, TensorInfo], quantized: bool
) -> None:
    w = parts.get("weight")
    where = _where(w, module + ".weight")
    if not quantized:
        r.issues.append(Issue("error", where, "NVFP4 tensors, but the quantization config "
                              "excludes this module (or there is none)"))  # fmt: skip
    n, k = spec.shape
    want = {"weight": ("U8", (n, k // 2)), "weight_scale": ("F8_E4M3", (n, k // 16))}
    for part, (dtype, shape) in want.items():
        info = parts.get(part)
        if info is None:
            r.issues.append(Issue("error", where, f"NVFP4 weight lacks {module}.{part}"))
            continue
        if info.dtype != dtype or info.shape != shape:
            r.issues.append(
                _tensor_issue(
                    "error",
                    info,
                    f"{module}.{part}",
                    f"{info.dtype} {list(info.shape)}, expected {dtype} {list(shape)}",
                )
            )
    for part in ("weight_scale_2", "input_scale"):
        info = parts.get(part)
        if info is None:
            if part == "weight_scale_2":
                r.issues.append(Issue("error", where, f"NVFP4 weight lacks {module}.{part}"))
            continue
        if info.dtype != "F32" or info.numel != 1:
            r.issues.append(
                _tensor_issue(
                    "error",
                    info,
                    f"{module}.{part}",
                    f"{info.dtype} {list(info.shape)}, expected an F32 scalar",
                )
            )
    r.nvfp4_modules.append(module)
    for info in parts.values():
        params = n * k if info.name.endswith(".weight") else 0
        r.add(spec.group, "NVFP4", params, info.nbytes)


def resolve_mtp(cfg: Glm52Config, names: Iterable[str]) -> Glm52Config:
    """``cfg`` without its MTP layer when the checkpoint holds no tensor of it.

    transformers has no MTP module, so ``save_pretrained`` (and so most fine-tunes) writes none
    of the ``model.layers.<N>.*`` tensors, whatever the config says; such a checkpoint is a
    complete main model. A layer whose tensors are only partly there stays declared, so
    :func:`validate` names the missing ones.
    """
    layer = cfg.mtp_layer_index
    if layer is None or any(layer_of(n) == layer for n in names):
        return cfg
    return dataclasses.replace(cfg, num_nextn_predict_layers=0, mtp_layer_absent=True)


def mtp_absent_message(cfg: Glm52Config) -> str:
    """The one line saying a checkpoint has no MTP layer (``cfg`` from :func:`resolve_mtp`)."""
    return (
        f"no MTP layer {cfg.num_hidden_layers} in the checkpoint: MTP speculative decoding "
        "unavailable"
    )


def mtp_unavailable(cfg: Glm52Config) -> str:
    """Why a model built from ``cfg`` cannot draft MTP tokens (it has no MTP layer)."""
    if cfg.mtp_layer_absent:
        return mtp_absent_message(cfg)
    return "num_nextn_predict_layers is 0 in config.json: the model has no MTP layer"


def _layer_count_issue(cfg: Glm52Config, unexpected: list[str]) -> Issue | None:
    last = cfg.num_hidden_layers + (0 if cfg.mtp_layer_index is None else 1) - 1
    beyond = sorted({lay for n in unexpected if (lay := layer_of(n)) is not None and lay > last})
    if beyond:
        return Issue("error", "config.json", f"num_hidden_layers={cfg.num_hidden_layers} "
                     f"(+{cfg.num_nextn_predict_layers} MTP) but the tensors have layers up to "
                     f"{beyond[-1]}")  # fmt: skip
    return None


def validate(cfg: Glm52Config, tensors: dict[str, TensorInfo], quant: QuantConfig | None) -> Report:
    """Compare checkpoint headers with the layout ``cfg`` and ``quant`` imply (``cfg`` as
    :func:`resolve_mtp` settles it: a wholly absent MTP layer is one warning)."""
    r = Report()
    cfg = resolve_mtp(cfg, tensors)
    if cfg.mtp_layer_absent:
        r.issues.append(Issue("warning", "config.json", mtp_absent_message(cfg)))
    expected = expected_tensors(cfg)
    side: dict[str, dict[str, TensorInfo]] = defaultdict(dict)
    plain: dict[str, TensorInfo] = {}
    for name, info in tensors.items():
        split = nvfp4_part(name, info.dtype == "U8")
        if is_kv_scale(name):
            r.ignored.append(name)  # FP8 KV-cache scales: engine-only
        elif split is not None:
            side[split[0]][split[1]] = info
        else:
            plain[name] = info
    quant_error: set[str] = set()
    for name, spec in expected.items():
        module = name[: -len(".weight")] if spec.linear else name
        quantized = False
        if quant is not None and spec.linear:
            try:
                quantized = quant.is_quantized(module) and not module.endswith(NEVER_QUANTIZED)
            except QuantConfigError as e:
                if module not in quant_error:
                    r.issues.append(Issue("error", quant.source, str(e).split(": ", 1)[-1]))
                    quant_error.update({module})
        if module in side and spec.linear and name in plain and "weight" not in side[module]:
            side[module]["weight"] = plain.pop(name)  # scales present: a mis-typed NVFP4 weight
        if module in side and spec.linear:
            _check_nvfp4(r, module, spec, side.pop(module), quantized)
        elif name in plain:
            info = plain.pop(name)
            if quantized and info.dtype != "U8":
                r.issues.append(
                    _tensor_issue(
                        "error",
                        info,
                        name,
                        f"{info.dtype} weight, but the "
                        "quantization config makes this module NVFP4 (weight_scale "
                        "missing)",
                    )
                )
            _check_plain(r, name, spec, info)
        elif not spec.optional:
            r.issues.append(Issue("error", name, "missing from the checkpoint", name))
    # what remains was not expected
    for parts in side.values():
        plain.update({p.name: p for p in parts.values()})
    unexpected = []
    for name, info in sorted(plain.items()):
        if is_shared_indexer(name, cfg):
            lay = layer_of(name)
            r.issues.append(
                _tensor_issue(
                    "warning",
                    info,
                    name,
                    f"indexer tensor on shared IndexShare layer {lay}; ignored",
                )
            )
            r.ignored.append(name)
        else:
            unexpected.append(name)
            r.issues.append(_tensor_issue("error", info, name, "unexpected tensor"))
    layer_issue = _layer_count_issue(cfg, unexpected)
    if layer_issue:
        r.issues.insert(0, layer_issue)
    _check_experts_agree(r, cfg)
    return r


def _check_experts_agree(r: Report, cfg: Glm52Config) -> None:
    """Engines run one fused-MoE kernel per layer: its experts must share a precision."""
    per_layer: dict[int, set[str]] = defaultdict(set)
    for m in r.nvfp4_modules:
        if ".mlp.experts." in m:
            per_layer[layer_of(m) or 0].add(m)
    for lay, mods in per_layer.items():
        want = 3 * cfg.n_routed_experts
        if len(mods) != want:
            r.issues.append(Issue("error", f"model.layers.{lay}.mlp.experts",
                                  f"{len(mods)} of {want} expert linears are NVFP4; a fused MoE "
                                  "layer needs all or none"))  # fmt: skip

"""W4A4 emulation in the reference model: NVFP4 linears see NVFP4-quantized inputs.

The reference computes W4A16 by default (NVFP4 weights, bf16/fp32 activations: what Marlin runs
on Hopper). ``activations="nvfp4"`` adds a forward pre-hook to every linear that has an
``input_scale`` in the checkpoint, rounding its input as Blackwell's FP4 GEMMs do
(``glm52_plugin.nvfp4.activation``). Module names equal checkpoint names, so the hook of
``model.layers.3.mlp.experts.5.up_proj`` uses ``model.layers.3.mlp.experts.5.up_proj.input_scale``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from glm52_plugin.nvfp4.activation import fake_quantize

log = logging.getLogger(__name__)

Activations = Literal["bf16", "nvfp4"]
SUFFIX = ".input_scale"
# Linears that engines run as one GEMM on one input (vLLM's gate_up_proj and fused_qkv_a_proj):
# that input is quantized once, with the largest input_scale of the parts (vLLM modelopt.py
# ``input_scale.max()``).
_FUSED = (("gate_proj", "up_proj"), ("q_a_proj", "kv_a_proj_with_mqa"))
# Routed experts: vLLM's FlashInfer NVFP4 MoE kernels (its Blackwell defaults) quantize every
# expert's input with one global scale per layer, the max over the experts, one for gate/up (w13)
# and one for down (w2) (``amax_for_moe_activation_quant`` in vLLM's fused_moe/oracle/nvfp4.py
# and utils/flashinfer_fp4_moe.py). ModelOpt 0.47 calibrates one input quantizer per projection
# for all experts anyway, so its exports have equal scales there.
_ROUTED = re.compile(r"^((?:.*\.)?mlp\.experts)\.\d+\.(gate_proj|up_proj|down_proj)$")


def check_activations(activations: str) -> Activations:
    if activations not in get_args(Activations):
        raise ValueError(f"activations must be one of {get_args(Activations)}, got {activations!r}")
    return activations  # type: ignore[return-value]


def read_input_scales(path: str | Path) -> dict[str, Tensor]:
    """Checkpoint directory -> {module name: fp32 scalar ``input_scale``} (empty if none)."""
    from glm52_plugin.checkpoint.reader import Checkpoint

    ckpt = Checkpoint.open(path)
    scales: dict[str, Tensor] = {}
    for name, t in ckpt.read(n for n in ckpt.tensors if n.endswith(SUFFIX)):
        file = ckpt.tensors[name].file
        if t.numel() != 1 or not t.is_floating_point():
            raise ValueError(
                f"{file}: {name} must be a floating-point scalar, got {t.dtype} {tuple(t.shape)}"
            )
        value = t.float().reshape(())
        if not torch.isfinite(value) or value <= 0:
            raise ValueError(f"{file}: {name} = {value.item()} is not a positive number")
        scales[name[: -len(SUFFIX)]] = value
    return scales


def _group(name: str) -> str:
    """The set of linears whose inputs an engine quantizes with one shared global scale."""
    routed = _ROUTED.match(name)
    if routed:
        w = "w2" if routed.group(2) == "down_proj" else "w13"
        return f"{routed.group(1)}.*.{w}"
    parent, _, leaf = name.rpartition(".")
    for group in _FUSED:
        if leaf in group:
            return f"{parent}.{'+'.join(group)}"
    return name


def effective_input_scales(input_scales: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Each module's input_scale replaced by the max over the linears an engine quantizes together:
    fused gate/up and q_a/kv_a, and each layer's routed experts (gate/up together, down apart)."""
    groups: dict[str, list[str]] = {}
    for name in input_scales:
        groups.setdefault(_group(name), []).append(name)
    out: dict[str, Tensor] = {}
    for names in groups.values():
        value = torch.tensor(max(float(input_scales[n]) for n in names), dtype=torch.float32)
        out.update(dict.fromkeys(names, value))
    return out


def install_activation_quant(
    module: nn.Module, input_scales: Mapping[str, Tensor], prefix: str = ""
) -> int:
    """Hook every submodule whose ``prefix + name`` has an input_scale to fake-quantize its input
    to NVFP4; returns how many were hooked. Each scale is first replaced by the largest of the
    linears engines quantize together (``effective_input_scales``)."""
    scales = effective_input_scales(input_scales)
    hooked = 0
    for name, sub in module.named_modules():
        full = prefix + name
        if full not in scales:
            continue
        scale = scales[full]

        def hook(_m: nn.Module, args: tuple[Any, ...], scale: Tensor = scale) -> tuple[Any, ...]:
            return (fake_quantize(args[0], scale.to(args[0].device)), *args[1:])

        sub.register_forward_pre_hook(hook)
        hooked += 1
    return hooked


def require_input_scales(path: str | Path) -> dict[str, Tensor]:
    """``read_input_scales`` for ``activations="nvfp4"``: a clear error if the checkpoint has
    none (a BF16 checkpoint, or NVFP4 without static activation scales)."""
    scales = read_input_scales(path)
    if not scales:
        raise ValueError(
            f"{path}: activations='nvfp4' needs the checkpoint's NVFP4 input scales "
            f"(tensors named *{SUFFIX}), and this checkpoint has none"
        )
    return scales


def install_from_checkpoint(model: nn.Module, path: str | Path) -> int:
    """``activations="nvfp4"`` for a whole model loaded from ``path``."""
    scales = require_input_scales(path)
    hooked = install_activation_quant(model, scales)
    missing = sorted(set(scales) - {n for n, _ in model.named_modules()})
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} input scales name no module of the model, e.g. {missing[0]}"
        )
    log.info("NVFP4 activations: %d linears quantize their input (W4A4)", hooked)
    return hooked

"""NVFP4 activation fake quantization: the input of an NVFP4 linear as W4A4 kernels see it.

On Blackwell the engines quantize each NVFP4 linear's input on the fly: the checkpoint's fp32
``input_scale`` is the global (second-level) scale, every 16 consecutive input features get a
dynamic FP8-E4M3 block scale, and the values become E2M1. This module reproduces that in pure
torch, with the exact arithmetic of ModelOpt 0.47's own NVFP4 fake quantization (the Triton kernel
``fp4_fake_quant_block`` in ``modelopt/torch/kernels/quantization/gemm/fp4_kernel_hopper.py`` with
``modelopt/torch/kernels/quantization/common/nvfp4_quant.py``, reached from
``TensorQuantizer._fake_quantize`` -> ``tensor_quant.dynamic_block_quant``), per block of 16:

    g     = input_scale                      (= calibrated amax / (6 * 448), ModelOpt's export)
    s     = float(e4m3(min(amax(|x_block|) / (6 * g), 448))) * g   (e4m3: round to nearest even)
    s     = s if s >= 1e-5 else 1.0          (ModelOpt's guard for blocks whose scale underflows)
    x_q   = sign(x) * E2M1(|x| / s) * s      (E2M1: nearest, ties to the even code, saturating at 6)

Engines store the same global scale the other way round: vLLM keeps ``input_scale`` and hands
``1 / input_scale`` to ``scaled_fp4_quant`` (``input_global_scale_inv`` in vLLM's
``quantization/modelopt.py``), as TensorRT-LLM's ``fp4_quantize`` takes ``448 * 6 / amax``
(ModelOpt ``backends/nvfp4_gemm.py``). Their CUDA kernels multiply by reciprocals where ModelOpt
divides, so a value within an ulp of an E2M1 rounding boundary can land on the other side there;
everything else is the same, fused linears quantize their one input with the largest
``input_scale`` of their parts (vLLM ``input_scale.max()``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from glm52_plugin.nvfp4.codec import BLOCK, E2M1_MAX, E4M3_MAX, e2m1_decode, e2m1_encode

# ModelOpt: a dequantised block scale below this is replaced by 1.0 (fp4_kernel_hopper.py)
MIN_BLOCK_SCALE = 1e-5
# ModelOpt: a zero global scale is replaced by this before dividing (fp4_kernel_hopper.py)
_TINY_GLOBAL = 1e-12


def _global(input_scale: Tensor | float, device: torch.device) -> Tensor:
    g = torch.as_tensor(input_scale, dtype=torch.float32, device=device)
    if g.numel() != 1:
        raise ValueError(f"input_scale must be a scalar, got shape {tuple(g.shape)}")
    g = g.reshape(())
    return torch.where(g > 0, g, torch.tensor(_TINY_GLOBAL, device=device))


def block_scales(x: Tensor, input_scale: Tensor | float) -> Tensor:
    """x [..., K] -> dequantised fp32 block scales [..., K/16, 1] (e4m3 value * input_scale)."""
    if x.shape[-1] % BLOCK:
        raise ValueError(
            f"NVFP4 activations need a last dimension divisible by {BLOCK}, got {tuple(x.shape)}"
        )
    g = _global(input_scale, x.device)
    amax = x.float().unflatten(-1, (-1, BLOCK)).abs().amax(-1, keepdim=True)
    e4m3 = (amax / (E2M1_MAX * g)).clamp(max=E4M3_MAX).to(torch.float8_e4m3fn)
    scale = e4m3.float() * g
    return torch.where(scale >= MIN_BLOCK_SCALE, scale, torch.ones_like(scale))


def fake_quantize(x: Tensor, input_scale: Tensor | float) -> Tensor:
    """x [..., K] (K a multiple of 16) -> x rounded to NVFP4 and back, same shape and dtype.

    The arithmetic runs in fp32 whatever ``x``'s dtype (as ModelOpt's kernel does); the result is
    cast back to ``x.dtype``.
    """
    scale = block_scales(x, input_scale)  # checks the shape first
    blocks = x.float().unflatten(-1, (-1, BLOCK))
    values = e2m1_decode(e2m1_encode(blocks.abs() / scale)) * scale
    return torch.where(blocks >= 0, values, -values).flatten(-2).to(x.dtype)

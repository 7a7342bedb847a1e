"""NVFP4 (ModelOpt) codec: E2M1 codes, nibble packing, FP8-E4M3 block scales, FP32 global scale.

Follows ModelOpt ``qtensor/nvfp4_tensor.py`` (export recipe) and vLLM
``nvfp4_emulation_utils.py`` (decode). No I/O. ``dequantize`` is the formula below, or on CPU
its bit-identical fast path, ``compiled_gather``.
Shapes: N output rows, K input columns (multiple of 16); B = K / 16 blocks per row.
"""

from __future__ import annotations

import torch
from torch import Tensor

BLOCK = 16
E2M1_MAX = 6.0
E4M3_MAX = 448.0
E4M3_MIN_SUBNORMAL = 2.0**-9

# Code c -> value; bit 3 is the sign, so 8 is -0.0 [ModelOpt e2m1_values][vLLM kE2M1ToFloat].
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
               -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)  # fmt: skip
# Midpoints between neighbouring magnitudes; a tie goes to the even code (round-to-nearest-even).
_BOUNDS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)
# Ties at these midpoints round *up* (the upper neighbour has the even mantissa).
_ROUND_UP_TIES = (0.75, 1.75, 3.5)


def e2m1_decode(codes: Tensor) -> Tensor:
    """uint8 codes 0..15 (any shape) -> float32 values."""
    if codes.dtype != torch.uint8:
        raise ValueError(f"e2m1 codes must be uint8, got {codes.dtype}")
    return torch.tensor(E2M1_VALUES, device=codes.device)[codes.long()]


def e2m1_encode(x: Tensor) -> Tensor:
    """Round float values to E2M1 codes (uint8 0..15), nearest-even, saturating at +-6.

    Same codes as ModelOpt ``_cast_fp4``, except that an input -0.0 keeps its sign (code 8) so
    all 16 codes round-trip; both decode to zero.
    """
    x = x.float()
    sign = torch.signbit(x).to(torch.uint8) << 3
    mag = x.abs()
    # bucketize(right=False) counts bounds strictly below |x|, so a tie lands on the lower code...
    code = torch.bucketize(mag, torch.tensor(_BOUNDS, device=x.device)).to(torch.uint8)
    # ...and the three ties whose upper neighbour has the even mantissa move up.
    for tie in _ROUND_UP_TIES:
        code += (mag == tie).to(torch.uint8)
    return code | sign


def pack_nibbles(codes: Tensor) -> Tensor:
    """[..., K] uint8 codes -> [..., K/2] bytes; element 2j in the low nibble of byte j."""
    if codes.shape[-1] % 2:
        raise ValueError(f"cannot pack an odd number of codes ({codes.shape[-1]})")
    return (codes[..., 1::2] << 4) | codes[..., 0::2]


def unpack_nibbles(packed: Tensor) -> Tensor:
    """[..., K/2] bytes -> [..., K] uint8 codes (low nibble first)."""
    return torch.stack([packed & 0xF, packed >> 4], dim=-1).flatten(-2)


def global_scale(amax: Tensor | float) -> Tensor:
    """fp32 ``weight_scale_2`` (decode direction) = amax / (6 * 448); also ``input_scale``."""
    return torch.as_tensor(amax, dtype=torch.float32) / (E2M1_MAX * E4M3_MAX)


def block_scales(w: Tensor, weight_scale_2: Tensor) -> Tensor:
    """Per-16 FP8-E4M3 block scales [N, B] of w [N, K] for a given global scale."""
    blocks = w.float().unflatten(-1, (-1, BLOCK))
    amax = blocks.abs().amax(dim=-1)
    scale = amax / (E2M1_MAX * weight_scale_2)
    scale[scale == 0] = 1.0  # all-zero block: any scale decodes to 0; ModelOpt writes 1.0
    # lower clamp: tiny blocks must not underflow to an fp8 zero (a zero scale decodes to 0)
    return scale.clamp(E4M3_MIN_SUBNORMAL, E4M3_MAX).to(torch.float8_e4m3fn)


def quantize(w: Tensor, weight_scale_2: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """w [N, K] -> (uint8 [N, K/2] packed codes, e4m3 [N, K/16] scales, fp32 [] global scale).

    ModelOpt's max-calibration export; pass ``weight_scale_2`` to share it across fused shards.
    """
    if w.ndim != 2 or w.shape[-1] % BLOCK:
        raise ValueError(f"NVFP4 needs a 2-D weight with K % {BLOCK} == 0, got {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError("cannot quantize a weight containing NaN/Inf")
    if weight_scale_2 is None:
        weight_scale_2 = global_scale(w.abs().amax().float())
    weight_scale_2 = weight_scale_2.float().reshape(())
    if weight_scale_2 == 0:  # all-zero weight: any positive global scale decodes to zeros
        weight_scale_2 = torch.tensor(1.0)
    scale = block_scales(w, weight_scale_2)
    # same op order as ModelOpt: w / (float(scale) * weight_scale_2)
    scaled = w.float().unflatten(-1, (-1, BLOCK)) / (scale.float() * weight_scale_2).unsqueeze(-1)
    codes = e2m1_encode(scaled.flatten(-2))
    return pack_nibbles(codes), scale, weight_scale_2


def quantize_fused(weights: list[Tensor]) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Quantize shards engines fuse (gate + up) with one shared global scale (the max),
    as ModelOpt ``preprocess_linear_fusion``; vLLM keeps only the first shard's value."""
    amax = torch.stack([w.abs().amax().float() for w in weights]).amax()
    shared = global_scale(amax)
    return [quantize(w, shared) for w in weights]


def check_shapes(packed: Tensor, weight_scale: Tensor, weight_scale_2: Tensor) -> None:
    """Raise ValueError unless the three tensors form one linear-layout NVFP4 weight."""
    if packed.dtype != torch.uint8:
        raise ValueError(f"weight must be uint8 (packed E2M1), got {packed.dtype}")
    if weight_scale.dtype != torch.float8_e4m3fn:
        raise ValueError(f"weight_scale must be float8_e4m3fn, got {weight_scale.dtype}")
    if weight_scale_2.numel() != 1:
        raise ValueError(
            f"weight_scale_2 must be a scalar, got shape {tuple(weight_scale_2.shape)}"
        )
    want = (*packed.shape[:-1], packed.shape[-1] * 2 // BLOCK)
    if packed.shape[-1] % (BLOCK // 2) or tuple(weight_scale.shape) != want:
        raise ValueError(
            f"weight_scale shape {tuple(weight_scale.shape)} does not match weight "
            f"{tuple(packed.shape)} (expected {want}: one scale per {BLOCK} values)"
        )


def dequantize(
    packed: Tensor,
    weight_scale: Tensor,
    weight_scale_2: Tensor,
    dtype: torch.dtype = torch.bfloat16,
    out: Tensor | None = None,
) -> Tensor:
    """(uint8 [..., N, K/2], e4m3 [..., N, K/16], fp32 []) -> [..., N, K] in ``dtype``.

    ``dequantize_formula``, through the fast CPU path where it applies (same bits). ``out``: a
    contiguous tensor of that shape and dtype to write into (a reused buffer) instead of a new one.
    """
    from glm52_plugin.nvfp4 import compiled_gather  # the fast path builds on this module

    check_shapes(packed, weight_scale, weight_scale_2)
    if out is not None:
        want = (*packed.shape[:-1], packed.shape[-1] * 2)
        if tuple(out.shape) != want or out.dtype != dtype or not out.is_contiguous():
            raise ValueError(f"out must be a contiguous {dtype} tensor of shape {want}, got "
                             f"{out.dtype} {tuple(out.shape)}")  # fmt: skip
    fast = compiled_gather.dequantize(packed, weight_scale, weight_scale_2, dtype, out)
    if fast is not None:
        return fast
    values = dequantize_formula(packed, weight_scale, weight_scale_2, dtype)
    return values if out is None else out.copy_(values)


def dequantize_formula(
    packed: Tensor,
    weight_scale: Tensor,
    weight_scale_2: Tensor,
    dtype: torch.dtype = torch.bfloat16,
) -> Tensor:
    """W[n, 16b+i] = E2M1(code) * (float(weight_scale[n, b]) * weight_scale_2), in fp32, then cast:
    the op order of vLLM ``dequantize_to_dtype`` (swizzle=False), so results are bit-identical."""
    values = e2m1_decode(unpack_nibbles(packed)).unflatten(-1, (-1, BLOCK))
    scale = weight_scale.float() * weight_scale_2.float().reshape(())
    return (values * scale.unsqueeze(-1)).flatten(-2).to(dtype)

"""NVFP4 (ModelOpt) codec and scale layouts; pure torch, no I/O."""

from glm52_plugin.nvfp4.codec import (
    BLOCK,
    E2M1_VALUES,
    block_scales,
    check_shapes,
    dequantize,
    dequantize_formula,
    e2m1_decode,
    e2m1_encode,
    global_scale,
    pack_nibbles,
    quantize,
    quantize_fused,
    unpack_nibbles,
)
from glm52_plugin.nvfp4.layout import swizzle_blockscale, unswizzle_blockscale
from glm52_plugin.nvfp4.packed import PackedWeight

__all__ = [
    "BLOCK",
    "E2M1_VALUES",
    "PackedWeight",
    "block_scales",
    "check_shapes",
    "dequantize",
    "dequantize_formula",
    "e2m1_decode",
    "e2m1_encode",
    "global_scale",
    "pack_nibbles",
    "quantize",
    "quantize_fused",
    "swizzle_blockscale",
    "unpack_nibbles",
    "unswizzle_blockscale",
]

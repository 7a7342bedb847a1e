"""Run ModelOpt's NVFP4 fake quantization on CPU tensors, through ModelOpt's own pure-torch code.

ModelOpt 0.47 fake-quantizes NVFP4 (``TensorQuantizer._fake_quantize`` -> ``dynamic_block_quant``
-> ``tensor_quant.dynamic_block_quantize_op``) only on CUDA: the op asserts
``amax.is_cuda`` and then runs its Triton kernel ``fp4_fake_quant_block`` or its CUDA extension.
This swaps, for CPU tensors only, that kernel selection for ModelOpt's own pure-torch NVFP4 round
trip: ``NVFP4QTensor.quantize`` then ``dequantize`` (``qtensor/nvfp4_tensor.py``, the code its HF
exporter packs weights with), with the global scale the Triton wrapper uses, amax / (6 * 448).
Everything else (quantizer placement, calibration, amax, the fused-expert plugin, export) is
ModelOpt's unchanged.

The two ModelOpt paths agree except for blocks whose scale underflows: the Triton kernel lets the
E4M3 block scale round to zero and then uses 1.0 when (scale * global) < 1e-5, the pure-torch path
clamps the E4M3 scale up to 2**-9. ``glm52_plugin.nvfp4.activation`` follows the Triton kernel
(what runs on GPUs); the tests check that no block they compare lies in that range.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from modelopt.torch.quantization import tensor_quant
from modelopt.torch.quantization.qtensor import NVFP4QTensor
from modelopt.torch.quantization.utils.numeric_utils import E2M1_MAX, E4M3_MAX

# (num_bits, exponent_bits, scale_num_bits, scale_exponent_bits) of NVFP4: E2M1 values, E4M3 scales
NVFP4_BITS = (4, 2, 8, 4)


@contextlib.contextmanager
def modelopt_nvfp4_on_cpu() -> Iterator[None]:
    original = tensor_quant.dynamic_block_quantize_op

    def op(inputs, block_size, amax, num_bits, exponent_bits, scale_num_bits, scale_exp_bits):
        args = (num_bits, exponent_bits, scale_num_bits, scale_exp_bits)
        if inputs.is_cuda:
            return original(inputs, block_size, amax, *args)
        if args != NVFP4_BITS or amax is None:
            raise NotImplementedError(f"CPU stand-in handles calibrated NVFP4 only, got {args}")
        global_scale = amax.float() / (E2M1_MAX * E4M3_MAX)
        q, scale, scale_2 = NVFP4QTensor.quantize(
            inputs, block_size, weights_scaling_factor_2=global_scale
        )
        return q.dequantize(
            dtype=inputs.dtype, scale=scale, double_scale=scale_2, block_sizes={-1: block_size}
        )

    tensor_quant.dynamic_block_quantize_op = op
    try:
        yield
    finally:
        tensor_quant.dynamic_block_quantize_op = original


def underflow_blocks(x: torch.Tensor, global_scale: torch.Tensor) -> int:
    """How many non-zero 16-blocks of x lie where ModelOpt's GPU and CPU paths differ."""
    amax = x.float().unflatten(-1, (-1, 16)).abs().amax(-1)
    ratio = amax / (E2M1_MAX * global_scale.float())
    e4m3 = ratio.clamp(max=E4M3_MAX).to(torch.float8_e4m3fn).float()
    differ = (ratio < 2.0**-9) | (e4m3 * global_scale.float() < 1e-5)
    return int((differ & (amax > 0)).sum())

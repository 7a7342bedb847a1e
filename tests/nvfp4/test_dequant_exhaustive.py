"""Both ``dequantize`` paths (the codec's formula and the compiled CPU gather) against the spec
formula and a previous implementation, bit for bit, over every (packed byte, scale byte) pair:
NaN scale bytes, negative scales, overflow to Inf, subnormal products and odd global scales
included."""

from __future__ import annotations

import pytest
import torch

from glm52_plugin.nvfp4 import compiled_gather, dequantize, quantize
from glm52_plugin.nvfp4.codec import dequantize_formula

# Written out from the spec, not imported from the code under test.
SPEC_E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]
BITS = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}
GLOBAL_SCALES = [
    1.0,
    2.0**-10,
    0.37 / 2688,  # an odd (non power of two) amax / (6 * 448), as ModelOpt writes
    3.1415927,
    -0.75,  # not produced by ModelOpt, but the formula is defined for it
    1e-30,  # products in the float32 subnormal range and below bf16/fp16 precision
    1.2e-40,  # a subnormal global scale
    1e36,  # products overflow to Inf; 0 * Inf is NaN
    float("nan"),
]


@pytest.fixture(params=["formula", "compiled"])
def dequant_path(request, monkeypatch):
    """The codec's formula, then ``dequantize`` with the compiled CPU gather forced on for every
    size it can take (two or more rows of 512 bytes; the rest of a tensor is its eager tail);
    checks that the compiled path really ran on each of those."""
    if request.param == "formula":
        yield dequantize_formula
        return
    monkeypatch.setattr(compiled_gather, "MIN_BYTES", 0)
    calls = []
    real = compiled_gather.dequantize

    def counting(packed, *rest):
        out = real(packed, *rest)
        calls.append((packed.numel(), out is not None))
        return out

    monkeypatch.setattr(compiled_gather, "dequantize", counting)
    yield dequantize
    if "error" in compiled_gather._state:
        pytest.skip(f"Inductor cannot compile on this machine: {compiled_gather._state['error']}")
    for size, fast in calls:
        assert fast == (size >= 2 * compiled_gather.WIDTH), size


def spec_dequantize(packed: torch.Tensor, scale: torch.Tensor, gs: torch.Tensor, dtype):
    """decode e2m1 -> float32, * (scale.float() * global), cast: the straightforward formula."""
    codes = torch.stack([packed & 0xF, packed >> 4], dim=-1).flatten(-2).long()
    values = torch.tensor(SPEC_E2M1)[codes].unflatten(-1, (-1, 16))
    return (values * (scale.float() * gs.float()).unsqueeze(-1)).flatten(-2).to(dtype)


def legacy_dequantize(packed: torch.Tensor, scale: torch.Tensor, gs: torch.Tensor, dtype):
    """The implementation before the chunked fast path (64K-entry table, index assembled as
    the bytes of an int32, one index_select), kept verbatim as the bit-identity reference."""
    pair_int = {torch.bfloat16: torch.int32, torch.float16: torch.int32, torch.float32: torch.int64}
    scales = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    combined = scales * gs.float().reshape(())
    values = torch.tensor(SPEC_E2M1)
    b = torch.arange(256)
    pairs = torch.stack([values[b & 0xF], values[b >> 4]], dim=-1)
    table = (pairs.unsqueeze(0) * combined.view(256, 1, 1)).to(dtype)
    table = table.view(pair_int[dtype]).reshape(-1)
    *lead, half = packed.shape
    idx = torch.zeros((*lead, half // 8, 8, 4), dtype=torch.uint8)
    idx[..., 0] = packed.reshape(*lead, half // 8, 8)
    idx[..., 1] = scale.view(torch.uint8).unsqueeze(-1)
    out = table.index_select(0, idx.view(torch.int32).reshape(-1))
    return out.view(dtype).reshape(*lead, half * 2)


def assert_bits_equal(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    bits = BITS[got.dtype]
    diff = got.view(bits) != want.view(bits)
    assert not diff.any(), f"{int(diff.sum())} differing values, first at {diff.nonzero()[0]}"


def assert_spec_equal(got: torch.Tensor, want: torch.Tensor) -> None:
    """Bitwise, except that any NaN matches any NaN (the spec formula's own cast may pick a
    different NaN payload for a tail element than a vectorised one)."""
    nan = torch.isnan(want)
    assert torch.equal(torch.isnan(got), nan)
    assert_bits_equal(got.masked_fill(nan, 0), want.masked_fill(nan, 0))


def all_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """Row s: every packed byte 0..255 (32 blocks), all blocks with scale byte s."""
    packed = torch.arange(256, dtype=torch.uint8).repeat(256, 1)  # [256 rows, 256 bytes]
    scale = torch.arange(256, dtype=torch.uint8).view(-1, 1).expand(256, 32).contiguous()
    return packed, scale.view(torch.float8_e4m3fn)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("gs", GLOBAL_SCALES)
def test_every_byte_and_scale_byte_matches_spec_and_previous_code(dtype, gs, dequant_path):
    packed, scale = all_pairs()
    gs_t = torch.tensor(gs, dtype=torch.float32)
    got = dequant_path(packed, scale, gs_t, dtype)
    assert_bits_equal(got, legacy_dequantize(packed, scale, gs_t, dtype))
    assert_spec_equal(got, spec_dequantize(packed, scale, gs_t, dtype))


def test_every_combination_with_a_scrambled_layout(dequant_path):
    # the same 64K pairs, shuffled over rows, blocks and byte positions, so every pair also
    # meets chunk and thread boundaries at varying offsets
    gen = torch.Generator().manual_seed(0)
    packed, scale = all_pairs()
    block_bytes = packed.view(256, 32, 8)
    order = torch.randperm(256 * 32, generator=gen)
    packed = block_bytes.reshape(-1, 8)[order].reshape(128, 512)
    scale = scale.view(torch.uint8).reshape(-1)[order].reshape(128, 64).view(torch.float8_e4m3fn)
    gs = torch.tensor(0.37 / 2688)
    for dtype in BITS:
        got = dequant_path(packed, scale, gs, dtype)
        assert_bits_equal(got, legacy_dequantize(packed, scale, gs, dtype))


@pytest.mark.parametrize(
    ("n", "k"), [(1, 16), (3, 48), (7, 4096), (601, 2048), (37, 70000 // 16 * 16), (5, 304)]
)
def test_sizes_across_rows_and_tails(n, k, dequant_path):
    # compiled: 7 x 4096 is whole 512-byte rows, 37 x 69984 and 5 x 304 leave an eager tail
    # (whose blocks straddle the input's rows), 1 x 16 and 3 x 48 are too small for it
    gen = torch.Generator().manual_seed(n)
    packed = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, generator=gen)
    scale = torch.randint(0, 256, (n, k // 16), dtype=torch.uint8, generator=gen)
    scale = scale.view(torch.float8_e4m3fn)
    gs = torch.tensor(1 / 2688)
    for dtype in BITS:
        assert_bits_equal(
            dequant_path(packed, scale, gs, dtype), legacy_dequantize(packed, scale, gs, dtype)
        )


def test_stacked_non_contiguous_and_empty_inputs(dequant_path):
    w = torch.randn(2, 64, 256, generator=torch.Generator().manual_seed(3))
    parts = [quantize(x) for x in w]
    packed = torch.stack([p for p, _, _ in parts])
    scale = torch.stack([s for _, s, _ in parts])
    gs = parts[0][2]
    want = legacy_dequantize(packed, scale, gs, torch.bfloat16)
    assert_bits_equal(dequant_path(packed, scale, gs), want)
    # a strided view (every other row) takes the same values as its contiguous copy
    assert_bits_equal(dequant_path(packed[:, ::2], scale[:, ::2], gs), want[:, ::2])
    empty = dequant_path(packed[:, :0], scale[:, :0], gs)
    assert empty.shape == (2, 0, 256)
    assert empty.dtype == torch.bfloat16


def test_checkpoint_nan_scale_check_is_isfinite_of_the_float_value():
    # the loader tests scale bytes instead of isfinite(scale.float()); same verdict for every
    # byte, wherever it sits (here past the first inline slice of 32767 bytes)
    from glm52_plugin.checkpoint.reader import _has_nan_e4m3

    for byte in range(256):
        scale = torch.full((300, 128), 0x38, dtype=torch.uint8)
        scale[-1, -1] = byte
        scale = scale.view(torch.float8_e4m3fn)
        assert _has_nan_e4m3(scale) == (not torch.isfinite(scale.float()).all())


def test_compiled_path_applies_only_to_large_cpu_tensors_of_table_dtypes():
    packed = torch.zeros(2048, 1024, dtype=torch.uint8)  # 2 MiB: above MIN_BYTES
    scale = torch.full((2048, 128), 0x38, dtype=torch.uint8).view(torch.float8_e4m3fn)
    gs = torch.tensor(1.0)
    assert compiled_gather.dequantize(packed[:1], scale[:1], gs, torch.bfloat16) is None  # 1 KiB
    assert compiled_gather.dequantize(packed, scale, gs, torch.float64) is None
    meta = (packed.to("meta"), scale.to("meta"), gs.to("meta"))
    assert compiled_gather.dequantize(*meta, torch.bfloat16) is None
    assert dequantize(*meta).device.type == "meta"
    got = compiled_gather.dequantize(packed, scale, gs, torch.bfloat16)
    if "error" in compiled_gather._state:
        pytest.skip(f"Inductor cannot compile on this machine: {compiled_gather._state['error']}")
    assert got is not None
    assert_bits_equal(got, dequantize_formula(packed, scale, gs, torch.bfloat16))


def test_inside_a_callers_torch_compile():
    # a caller's torch.compile over a model with packed experts traces dequantize: the formula
    # (no nested compile) must give the same bits there, here for every (byte, scale byte) pair
    # in a weight above compiled_gather.MIN_BYTES
    packed, scale = all_pairs()
    packed, scale = packed.repeat(16, 1), scale.repeat(16, 1)
    assert packed.numel() >= compiled_gather.MIN_BYTES
    gs = torch.tensor(0.37 / 2688)
    x = torch.randn(3, packed.shape[1] * 2, generator=torch.Generator().manual_seed(0)).bfloat16()

    def project(x):
        return x @ dequantize(packed, scale, gs).t()

    want = legacy_dequantize(packed, scale, gs, torch.bfloat16)
    assert_bits_equal(torch.compile(lambda: dequantize(packed, scale, gs))(), want)
    # NaN scale bytes make NaN columns: compare them as equal
    torch.testing.assert_close(
        torch.compile(project)(x), x @ want.t(), rtol=0, atol=0, equal_nan=True
    )

"""Weights widened (or NVFP4-decoded) per call into one reused buffer, against the weight
converted once at load."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from glm52_plugin.nvfp4 import PackedWeight, compiled_gather, dequantize, quantize
from glm52_plugin.reference.packed_linear import PackedLinear
from glm52_plugin.reference.widened_linear import Scratch, WidenedLinear, install


def test_widened_linear_equals_the_weight_widened_at_load() -> None:
    torch.manual_seed(0)
    stored = torch.randn(48, 80).bfloat16()
    x = torch.randn(5, 80)
    layer = WidenedLinear(stored, torch.float32, Scratch())
    assert torch.equal(layer(x), F.linear(x, stored.float()))
    assert layer.weight.dtype == torch.float32
    assert torch.equal(layer.weight, stored.float())
    assert layer.stored is stored  # kept as given: no copy until a call


def test_linears_share_one_buffer_that_grows_to_the_largest_and_is_reused() -> None:
    torch.manual_seed(0)
    scratch = Scratch()
    small = WidenedLinear(torch.randn(8, 16).bfloat16(), torch.float32, scratch)
    big = WidenedLinear(torch.randn(32, 16).bfloat16(), torch.float32, scratch)
    x = torch.randn(3, 16)
    small(x)
    assert scratch.nbytes == 8 * 16 * 4
    big(x)
    assert scratch.nbytes == 32 * 16 * 4
    buffer = scratch.take((1,), torch.float32, torch.device("cpu")).data_ptr()
    # a smaller weight after a larger one reuses the buffer, and the results stay exact
    assert torch.equal(small(x), F.linear(x, small.stored.float()))
    assert scratch.take((1,), torch.float32, torch.device("cpu")).data_ptr() == buffer
    assert scratch.nbytes == 32 * 16 * 4
    scratch.release()
    assert scratch.nbytes == 0


def test_install_checks_the_module_and_the_shape() -> None:
    model = nn.Sequential(nn.Linear(16, 8, bias=False), nn.Linear(16, 8), nn.LayerNorm(16))
    install(model, "0", torch.zeros(8, 16, dtype=torch.bfloat16), torch.float32, Scratch())
    assert isinstance(model[0], WidenedLinear)
    with pytest.raises(ValueError, match=r"^1: not a bias-free linear layer \(Linear\)"):
        install(model, "1", torch.zeros(8, 16, dtype=torch.bfloat16), torch.float32, Scratch())
    with pytest.raises(ValueError, match=r"^2: not a bias-free linear layer \(LayerNorm\)"):
        install(model, "2", torch.zeros(16, dtype=torch.bfloat16), torch.float32, Scratch())
    model = nn.Sequential(nn.Linear(16, 8, bias=False))
    with pytest.raises(ValueError, match=r"0\.weight: shape \(16, 8\), expected \(8, 16\)"):
        install(model, "0", torch.zeros(16, 8, dtype=torch.bfloat16), torch.float32, Scratch())


@pytest.fixture(params=["formula", "compiled"])
def force_path(request, monkeypatch):
    """Run dequantize through the formula (below the compiled path's size floor), then through
    the compiled CPU gather (floor lowered to 0); skips where Inductor cannot compile."""
    if request.param == "compiled":
        monkeypatch.setattr(compiled_gather, "MIN_BYTES", 0)
    yield request.param
    if request.param == "compiled":
        if "error" in compiled_gather._state:
            pytest.skip(f"Inductor cannot compile here: {compiled_gather._state['error']}")
        assert "ok" in compiled_gather._state  # the compiled gather really ran


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dequantize_into_a_given_buffer_equals_a_fresh_result(force_path, dtype) -> None:
    torch.manual_seed(0)
    parts = quantize(torch.randn(64, 1024))  # 32 KiB packed: 64 compiled rows of 512 bytes
    want = dequantize(*parts, dtype)
    buf = torch.full((64, 1024), float("nan"), dtype=dtype)
    got = dequantize(*parts, dtype, out=buf)
    assert got.data_ptr() == buf.data_ptr()
    assert torch.equal(buf, want)
    with pytest.raises(ValueError, match=r"out must be a contiguous .* of shape \(64, 1024\)"):
        dequantize(*parts, dtype, out=torch.empty(64, 512, dtype=dtype))
    with pytest.raises(ValueError, match="out must be a contiguous"):
        dequantize(*parts, dtype, out=torch.empty(1024, 64, dtype=dtype).t())


def test_packed_linear_decoding_into_the_scratch_equals_a_fresh_decode() -> None:
    torch.manual_seed(0)
    weight = PackedWeight(*quantize(torch.randn(96, 64)))
    x = torch.randn(7, 64)
    fresh = PackedLinear(weight, torch.float32)
    scratch = Scratch()
    shared = PackedLinear(weight, torch.float32, scratch)
    assert torch.equal(shared(x), fresh(x))
    assert torch.equal(fresh(x), F.linear(x, weight.dequantize(torch.float32)))
    assert scratch.nbytes == 96 * 64 * 4

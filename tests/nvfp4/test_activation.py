"""NVFP4 activation fake quantization (W4A4) against the formula written out independently.

The expected values come from a scalar implementation in Python floats: every fp32 operation is
done in float64 and rounded to fp32 (exact for one division or multiplication of fp32 operands),
E4M3 and E2M1 rounding pick the nearest representable value by search over all of them (ties to
the even encoding). The formula is ModelOpt 0.47's NVFP4 fake quantization
(modelopt/torch/kernels/quantization/gemm/fp4_kernel_hopper.py, common/nvfp4_quant.py):
per 16 values, s = e4m3(min(amax / (6 * g), 448)) * g, s = 1 if s < 1e-5, x = E2M1(|x| / s) * s.
The comparison with ModelOpt's own quantizer is tests/modelopt (its own environment).
"""

from __future__ import annotations

import struct

import pytest
import torch

from glm52_plugin.nvfp4.activation import block_scales, fake_quantize
from glm52_plugin.reference.activations import (
    effective_input_scales,
    install_activation_quant,
    read_input_scales,
)
from tests.conftest import prompt_ids

E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def _e4m3_table() -> list[tuple[float, int]]:
    """(value, bit pattern) of every finite non-negative E4M3 (fn) number, from its bits."""
    out = []
    for bits in range(0x7F):  # 0x7F is NaN
        exp, man = bits >> 3, bits & 7
        value = man / 8 * 2.0**-6 if exp == 0 else (1 + man / 8) * 2.0 ** (exp - 7)
        out.append((value, bits))
    return out


E4M3 = _e4m3_table()


def nearest(v: float, table: list[tuple[float, int]]) -> float:
    """Nearest table value to v >= 0, ties to the even encoding, saturating at the largest."""
    best = min(table, key=lambda t: (abs(t[0] - v), t[1] % 2))
    return best[0]


E2M1_TABLE = [(v, i) for i, v in enumerate(E2M1)]


def reference_block(xs: list[float], g: float) -> list[float]:
    amax = max(abs(x) for x in xs)
    scaled = f32(amax / f32(6.0 * g))
    s = f32(nearest(min(scaled, 448.0), E4M3) * g)
    if s < 1e-5:
        s = 1.0
    out = []
    for x in xs:
        q = f32(nearest(f32(abs(x) / s), E2M1_TABLE) * s)
        out.append(q if x >= 0 else -q)
    return out


def reference(x: torch.Tensor, g: float) -> torch.Tensor:
    rows = x.float().reshape(-1, 16).tolist()
    return torch.tensor([reference_block(r, f32(g)) for r in rows]).reshape(x.shape)


def test_random_blocks_match_the_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    # magnitudes over 2**-12 .. 2**6 per block, so block scales cover E4M3 subnormals to normal
    mag = 2.0 ** torch.randint(-12, 7, (600, 1), generator=gen).float()
    x = torch.randn(600, 16, generator=gen) * mag
    for g in (4.0 / 2688, 0.37 / 2688, 1e-3):
        got = fake_quantize(x, torch.tensor(g))
        assert torch.equal(got, reference(x, g)), g


def test_every_e2m1_value_survives_and_midpoints_round_to_even() -> None:
    g = 2.0**-8
    s = 4.0 * g  # amax 6 * s gives the E4M3 scale 4 exactly (6 * s / (6 * g) = 4)
    exact = torch.tensor([[6.0, *E2M1, *(-v for v in E2M1[1:])]]) * s  # 16 values
    assert torch.equal(fake_quantize(exact, g), exact)
    mids = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]
    to_even = [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]  # the neighbour with the even code
    x = torch.tensor([[6.0, *mids, *(-m for m in mids), 0.0]]) * s
    want = torch.tensor([[6.0, *to_even, *(-v for v in to_even), 0.0]]) * s
    assert torch.equal(fake_quantize(x, g), want)


def test_zero_tiny_and_saturating_blocks() -> None:
    g = 1e-3
    zero = torch.zeros(2, 16)
    assert torch.equal(fake_quantize(zero, g), zero)
    # block scale e4m3 * g below 1e-5: ModelOpt uses scale 1.0, so these tiny values become 0
    tiny = torch.full((1, 16), 3e-5)
    assert block_scales(tiny, g).item() == 1.0
    assert torch.equal(fake_quantize(tiny, g), torch.zeros_like(tiny))
    # far above the calibrated range: the block scale saturates at 448 * g, values at 6 * 448 * g
    big = torch.full((1, 16), 1e4)
    assert block_scales(big, g).item() == pytest.approx(448 * g)
    assert torch.allclose(fake_quantize(big, g), torch.full((1, 16), f32(6 * f32(448 * g))))
    assert torch.equal(fake_quantize(big, g), reference(big, g))


def test_dtype_shape_and_errors() -> None:
    x = torch.randn(3, 5, 32, dtype=torch.bfloat16)
    out = fake_quantize(x, 1e-3)
    assert out.dtype == torch.bfloat16
    assert out.shape == x.shape
    assert torch.equal(out.float(), reference(x.float(), 1e-3).to(torch.bfloat16).float())
    with pytest.raises(ValueError, match="divisible by 16"):
        fake_quantize(torch.randn(2, 24), 1e-3)
    with pytest.raises(ValueError, match="scalar"):
        fake_quantize(torch.randn(2, 16), torch.ones(2))


def test_hooks_quantize_the_inputs_of_the_named_linears() -> None:
    net = torch.nn.ModuleDict(
        {"mlp": torch.nn.ModuleDict({n: torch.nn.Linear(32, 8) for n in ("gate_proj", "up_proj")}),
         "other": torch.nn.Linear(32, 8)}
    )  # fmt: skip
    scales = {"model.mlp.gate_proj": torch.tensor(1e-3), "model.mlp.up_proj": torch.tensor(4e-3)}
    assert install_activation_quant(net, scales, prefix="model.") == 2
    seen = {}
    for name in ("mlp.gate_proj", "mlp.up_proj", "other"):
        net.get_submodule(name).register_forward_hook(
            lambda _m, args, _out, name=name: seen.__setitem__(name, args[0])
        )
    x = torch.randn(4, 32)
    for name in ("mlp.gate_proj", "mlp.up_proj", "other"):
        net.get_submodule(name)(x)
    # gate and up run as one fused GEMM in the engines: one quantization, the larger scale
    assert torch.equal(seen["mlp.gate_proj"], reference(x, 4e-3))
    assert torch.equal(seen["mlp.up_proj"], reference(x, 4e-3))
    assert torch.equal(seen["other"], x)


def test_routed_experts_share_one_scale_per_layer_and_projection() -> None:
    """As vLLM's FlashInfer NVFP4 MoE kernels: the max over a layer's experts, gate/up together,
    down apart; other layers and fused groups keep their own."""
    s = {f"model.layers.{i}.mlp.experts.{e}.{p}": torch.tensor(float(v))
         for i, base in ((1, 1.0), (2, 100.0))
         for e in range(3)
         for p, v in (("gate_proj", base + e), ("up_proj", base + 2 * e), ("down_proj", base - e))}  # fmt: skip
    s["model.layers.1.mlp.shared_experts.gate_proj"] = torch.tensor(7.0)
    s["model.layers.1.mlp.shared_experts.up_proj"] = torch.tensor(3.0)
    got = {n: v.item() for n, v in effective_input_scales(s).items()}
    for e in range(3):
        assert got[f"model.layers.1.mlp.experts.{e}.gate_proj"] == 5.0  # up of expert 2
        assert got[f"model.layers.1.mlp.experts.{e}.up_proj"] == 5.0
        assert got[f"model.layers.1.mlp.experts.{e}.down_proj"] == 1.0  # down of expert 0
        assert got[f"model.layers.2.mlp.experts.{e}.down_proj"] == 100.0
    assert got["model.layers.1.mlp.shared_experts.up_proj"] == 7.0


def test_from_pretrained_nvfp4_activations(toy_nvfp4_checkpoints, toy_checkpoints) -> None:
    from glm52_plugin.reference import Glm52ForCausalLM

    path = toy_nvfp4_checkpoints[2]
    scales = read_input_scales(path)
    assert scales
    assert all(".mlp.experts." in n for n in scales)
    w4a16 = Glm52ForCausalLM.from_pretrained(path, dtype=torch.float32, progress=False)
    w4a4 = Glm52ForCausalLM.from_pretrained(
        path, dtype=torch.float32, progress=False, activations="nvfp4"
    )
    seen = {}
    name = next(iter(scales))
    g = effective_input_scales(scales)[name].item()

    def capture(_m: torch.nn.Module, args: tuple, _out: torch.Tensor) -> None:
        seen.setdefault("x", args[0])

    w4a4.get_submodule(name).register_forward_hook(capture)
    ids = prompt_ids(24, seed=3)
    a, b = w4a16(ids), w4a4(ids)
    gap = (a - b).abs().max().item()
    assert 1e-4 < gap < 1.0  # the inputs really were rounded, and the model is still the model
    x = seen["x"]
    assert torch.equal(x, reference(x, g))  # on the NVFP4 grid: a fixed point
    from glm52_plugin.reference.compiled import DecodeStep

    with pytest.raises(ValueError, match="hooks"):  # its fused weights would bypass them
        DecodeStep(w4a4)
    DecodeStep(w4a16)
    with pytest.raises(ValueError, match=str(toy_checkpoints[2])):
        Glm52ForCausalLM.from_pretrained(
            toy_checkpoints[2], dtype=torch.float32, progress=False, activations="nvfp4"
        )
    with pytest.raises(ValueError, match="activations"):
        Glm52ForCausalLM.from_pretrained(path, progress=False, activations="fp8")


def test_stream_logits_nvfp4_activations_equal_in_memory(toy_nvfp4_checkpoints, toy_layers) -> None:
    """The streaming reference hooks each layer as it builds it: same logits as in memory."""
    from glm52_plugin.reference import Glm52ForCausalLM, stream_logits

    path = toy_nvfp4_checkpoints[toy_layers]
    ids = prompt_ids(40, batch=2, seed=6)
    model = Glm52ForCausalLM.from_pretrained(
        path, dtype=torch.float32, progress=False, activations="nvfp4"
    )
    want = model(ids)
    got = stream_logits(path, ids, activations="nvfp4", progress=False)
    assert (got - want).abs().max().item() <= 1e-5
    w4a16 = Glm52ForCausalLM.from_pretrained(path, dtype=torch.float32, progress=False)(ids)
    assert (w4a16 - got).abs().max().item() > 1e-4  # the streamed layers really were hooked

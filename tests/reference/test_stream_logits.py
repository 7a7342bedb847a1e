"""stream_logits: the in-memory reference's logits, one decoder layer resident at a time."""

from __future__ import annotations

import gc
import re
import shutil
import weakref
from unittest import mock

import pytest
import torch
from torch import Tensor, nn

from glm52_plugin.checkpoint import Checkpoint, CheckpointError
from glm52_plugin.reference import Glm52ForCausalLM, stream_logits
from glm52_plugin.reference import stream as stream_module
from glm52_plugin.reference.packed_linear import PackedLinear
from glm52_plugin.reference.stream import plan_memory
from glm52_plugin.reference.widened_linear import WidenedLinear
from tests.checkpoint.conftest import edit_tensors
from tests.conftest import prompt_ids

IDS = prompt_ids(24, batch=2)


@pytest.fixture(scope="module")
def nvfp4_models(toy_nvfp4_checkpoints) -> dict[int, Glm52ForCausalLM]:
    return {
        n: Glm52ForCausalLM.from_pretrained(p, dtype=torch.float32, progress=False)
        for n, p in toy_nvfp4_checkpoints.items()
    }


@pytest.mark.parametrize("layers", [2, 8])
def test_bf16_logits_equal_the_in_memory_reference(toy_checkpoints, toy_models, layers) -> None:
    got = stream_logits(toy_checkpoints[layers], IDS, progress=False)
    want = toy_models[layers](IDS)
    assert got.shape == (2, 24, toy_models[layers].config.vocab_size)
    assert got.dtype == torch.float32
    # bit for bit: the same fp32 matmuls on the same values, widened per call instead of at load
    assert torch.equal(got, want)


@pytest.mark.parametrize("layers", [2, 8])
def test_nvfp4_logits_equal_the_in_memory_reference(
    toy_nvfp4_checkpoints, nvfp4_models, layers
) -> None:
    # in memory every expert is dequantised at load; streamed, experts decode per call
    got = stream_logits(toy_nvfp4_checkpoints[layers], IDS, progress=False)
    assert torch.equal(got, nvfp4_models[layers](IDS))


def _built_blocks():
    """Patch stream's build_block to record (layer, weakref to block) in build order."""
    built: list[tuple[int, weakref.ref]] = []
    alive_at_build: list[int] = []
    real = stream_module.build_block

    def build(ckpt, layer, *args, **kwargs):
        gc.collect()
        alive_at_build.append(sum(ref() is not None for _, ref in built))
        block = real(ckpt, layer, *args, **kwargs)
        built.append((layer, weakref.ref(block)))
        return block

    return mock.patch.object(stream_module, "build_block", build), built, alive_at_build


def routed_experts(model, ids) -> tuple[Tensor, set[str], int]:
    """The in-memory model's logits for ids, the checkpoint names of the routed expert linears
    its routers pick, and how many MoE layers ran."""
    cfg = model.config
    picked: dict[int, set[int]] = {}
    hooks = []
    for i in range(cfg.num_hidden_layers):
        if cfg.is_moe_layer(i):

            def hook(_m, _args, out, i=i):
                picked.setdefault(i, set()).update(out[1].unique().tolist())

            hooks.append(model.model.layers[i].mlp.gate.register_forward_hook(hook))
    try:
        logits = model(ids)
    finally:
        for h in hooks:
            h.remove()
    names = {f"model.layers.{i}.mlp.experts.{e}.{p}"
             for i, es in picked.items() for e in es for p in ("gate_proj", "up_proj", "down_proj")}  # fmt: skip
    assert len(names) < 3 * cfg.n_routed_experts * len(picked)  # some experts are left out
    return logits, names, len(picked)


def test_only_the_experts_the_router_picks_are_decoded(toy_nvfp4_checkpoints, nvfp4_models):
    model = nvfp4_models[8]
    cfg = model.config
    ids = prompt_ids(2, batch=1)  # few tokens: a few experts per layer
    _, want, moe_layers = routed_experts(model, ids)  # the router's own choices, in memory

    names: dict[int, str] = {}  # id of a live PackedLinear -> its checkpoint name
    packed: list[str] = []
    real_build = stream_module.build_block

    def build(ckpt, layer, *args, **kwargs):
        block = real_build(ckpt, layer, *args, **kwargs)
        for n, m in block.named_modules():
            if isinstance(m, PackedLinear):
                names[id(m)] = f"model.layers.{layer}.{n}"
                packed.append(names[id(m)])
        return block

    decoded: list[str] = []
    real_decode = PackedLinear.dequantized

    def dequantized(self, dtype, *args):
        decoded.append(names[id(self)])
        return real_decode(self, dtype, *args)

    with (
        mock.patch.object(stream_module, "build_block", build),
        mock.patch.object(PackedLinear, "dequantized", dequantized),
    ):
        stream_logits(toy_nvfp4_checkpoints[8], ids, progress=False)
    assert len(packed) == 3 * cfg.n_routed_experts * moe_layers  # every expert kept packed
    assert sorted(decoded) == sorted(want)  # each picked expert linear once, no other


def test_bf16_weights_widen_per_call_and_only_for_the_experts_the_router_picks(
    toy_checkpoints, toy_models
) -> None:
    model = toy_models[8]
    cfg = model.config
    ids = prompt_ids(2, batch=1)  # few tokens: a few experts per layer
    want_logits, experts, moe_layers = routed_experts(model, ids)

    names: dict[int, str] = {}  # id of a live WidenedLinear -> its checkpoint name
    built: list[str] = []  # every WidenedLinear built, by checkpoint name
    scratches: set[int] = set()
    real_build = stream_module.build_block

    def build(ckpt, layer, *args, **kwargs):
        block = real_build(ckpt, layer, *args, **kwargs)
        for n, m in block.named_modules():
            if isinstance(m, nn.Linear):  # only a linear stored in fp32 needs no widening
                assert ckpt.tensors[f"model.layers.{layer}.{n}.weight"].dtype == "F32", n
            if isinstance(m, WidenedLinear):
                names[id(m)] = f"model.layers.{layer}.{n}"
                built.append(names[id(m)])
                scratches.add(id(m.scratch))
                assert m.stored.dtype == torch.bfloat16  # held as stored in the file
        return block

    widened: list[str] = []
    real_forward = WidenedLinear.forward

    def forward(self, x):
        widened.append(names[id(self)])
        return real_forward(self, x)

    with (
        mock.patch.object(stream_module, "build_block", build),
        mock.patch.object(WidenedLinear, "forward", forward),
    ):
        got = stream_logits(toy_checkpoints[8], ids, progress=False)
    assert torch.equal(got, want_logits)
    assert len(scratches) == 1  # one buffer for every layer
    assert len(built) > 3 * cfg.n_routed_experts * moe_layers
    # each linear widened once when it runs: every picked expert, no other expert, and every
    # other linear but kv_b_proj, whose weight MLA reads once, absorbed into q and the output
    want = [n for n in built
            if (".mlp.experts." not in n or n in experts) and not n.endswith(".kv_b_proj")]  # fmt: skip
    assert sorted(widened) == sorted(want)


@pytest.mark.parametrize("kind", ["bf16", "nvfp4"])
def test_the_memory_plan_covers_what_each_streamed_layer_holds(
    toy_checkpoints, toy_nvfp4_checkpoints, kind
) -> None:
    path = (toy_checkpoints if kind == "bf16" else toy_nvfp4_checkpoints)[8]
    ckpt = Checkpoint.open(path)
    plan = plan_memory(ckpt, *IDS.shape, torch.float32)
    held: dict[int, int] = {}  # bytes of each built block's parameters and buffers
    scratches = []
    real_build = stream_module.build_block

    def build(ckpt, layer, *args, **kwargs):
        block = real_build(ckpt, layer, *args, **kwargs)
        held[layer] = sum(t.numel() * t.element_size() for t in block.state_dict().values())
        scratches.append(kwargs["scratch"])
        return block

    real_head = stream_module._head

    def head(*args):
        nonlocal scratch_bytes
        scratch_bytes = scratches[0].nbytes  # grown to the largest weight any layer widened
        return real_head(*args)

    scratch_bytes = 0
    with (
        mock.patch.object(stream_module, "build_block", build),
        mock.patch.object(stream_module, "_head", head),
    ):
        stream_logits(path, IDS, progress=False)
    assert scratch_bytes > 0
    for layer, nbytes in held.items():
        w = ckpt.tensors[f"model.layers.{layer}.self_attn.kv_b_proj.weight"]
        absorbed = w.numel * 4 if w.dtype == "BF16" else 0  # the widened copy MLA reads
        assert nbytes + scratch_bytes <= plan.weights[f"layer {layer}"], layer
        assert plan.weights[f"layer {layer}"] <= nbytes + scratch_bytes + absorbed + 1024, layer


def test_one_decoder_layer_resident_at_a_time(toy_nvfp4_checkpoints) -> None:
    path = toy_nvfp4_checkpoints[8]
    ckpt = Checkpoint.open(path)
    plan = plan_memory(ckpt, *IDS.shape, torch.float32)
    _, worst = plan.worst
    budget = worst * 1.01
    # a budget below the whole model's weights, above one layer's
    assert budget < plan.total_weights()
    assert max(plan.weights.values()) * 3 < plan.total_weights()
    patch, built, alive = _built_blocks()
    with patch:
        stream_logits(path, IDS, max_memory_gb=budget / 1e9, progress=False)
    assert [layer for layer, _ in built] == list(range(ckpt.config.num_hidden_layers))
    assert alive == [0] * len(built)  # no earlier layer alive when the next is read


def test_a_budget_below_one_layer_is_refused_with_the_estimate(toy_nvfp4_checkpoints) -> None:
    with pytest.raises(ValueError, match=r"layer \d+ needs about .* GB .*max_memory_gb=1e-05"):
        stream_logits(toy_nvfp4_checkpoints[2], IDS, max_memory_gb=1e-5, progress=False)


@pytest.mark.parametrize(
    ("ids", "match"),
    [
        (torch.tensor([1, 2, 3]), r"\[B, S\] tensor, got shape \[3\]"),
        (torch.zeros(1, 0, dtype=torch.long), r"got shape \[1, 0\]"),
        (torch.ones(1, 3), "integer token ids, got torch.float32"),
        (torch.tensor([[1, 404]]), r"token ids 1\.\.404 outside the vocabulary .* \(0\.\.403\)"),
    ],
)
def test_bad_input_ids(toy_checkpoints, ids, match) -> None:
    with pytest.raises(ValueError, match=match):
        stream_logits(toy_checkpoints[2], ids, progress=False)


def test_a_missing_tensor_is_named_before_any_layer_runs(toy_nvfp4_checkpoints, tmp_path):
    path = tmp_path / "toy"
    shutil.copytree(toy_nvfp4_checkpoints[2], path)
    gone = "model.layers.1.mlp.experts.3.up_proj.weight_scale"
    edit_tensors(path, lambda t: t.pop(gone, None))
    patch, built, _ = _built_blocks()
    with patch, pytest.raises(CheckpointError, match=f"lacks {re.escape(gone)}"):
        stream_logits(path, IDS, progress=False)
    assert built == []


def test_w4a4_needs_input_scales_and_unknown_activations_are_refused(toy_checkpoints) -> None:
    # W4A4 itself is checked against the in-memory reference in tests/nvfp4/test_activation.py
    patch, built, _ = _built_blocks()
    with patch, pytest.raises(ValueError, match=r"activations='nvfp4' needs .*input_scale"):
        stream_logits(toy_checkpoints[2], IDS, activations="nvfp4", progress=False)
    with patch, pytest.raises(ValueError, match="activations must be one of"):
        stream_logits(toy_checkpoints[2], IDS, activations="fp8", progress=False)
    assert built == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_cpu(toy_nvfp4_checkpoints) -> None:
    path = toy_nvfp4_checkpoints[8]
    cpu = stream_logits(path, IDS, progress=False)
    gpu = stream_logits(path, IDS, device="cuda", progress=False)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-4)

"""Each corruption gives a CheckpointError naming file and tensor; none loads silently."""

from __future__ import annotations

import json
import re

import pytest
import torch

from glm52_plugin.checkpoint import Checkpoint, CheckpointError
from glm52_plugin.reference import Glm52ForCausalLM
from tests.checkpoint.conftest import edit_tensors, shard_of

EXPERT = "model.layers.1.mlp.experts.3.up_proj"


def _load(path, packed_experts: bool = False):
    return Glm52ForCausalLM.from_pretrained(
        path, dtype=torch.float32, progress=False, packed_experts=packed_experts
    )


def _fails(path, *patterns: str) -> None:
    # both ways of loading NVFP4 experts: kept packed, they are checked just the same
    for packed_experts in (False, True):
        with pytest.raises(CheckpointError) as err:
            _load(path, packed_experts)
        for p in patterns:
            assert re.search(p, str(err.value)), f"{p!r} not in:\n{err.value}"


def test_truncated_shard(copy_toy):
    path = copy_toy()
    shard = shard_of(path, f"{EXPERT}.weight")
    shard.write_bytes(shard.read_bytes()[:-100])
    _fails(path, re.escape(shard.name), "truncated", r"tensor model\.layers\.")


def test_shard_missing_from_disk(copy_toy):
    path = copy_toy()
    shard = shard_of(path, f"{EXPERT}.weight")
    shard.unlink()
    _fails(path, re.escape(shard.name), "missing", r"model\.layers\.")


def _replace(path, name, value):
    edit_tensors(path, lambda t: t.__setitem__(name, value) if name in t else None)


@pytest.mark.parametrize(
    ("part", "make", "msg"),
    [
        ("weight", lambda t: t.view(torch.int8), "I8"),
        ("weight", lambda t: t[:, :-8].contiguous(), r"U8 \[64, 120\], expected U8 \[64, 128\]"),
        ("weight_scale", lambda t: t.to(torch.bfloat16), "BF16"),
        ("weight_scale", lambda t: t[:-1].contiguous(), r"\[63, 16\]"),
        ("weight_scale_2", lambda t: torch.ones(2), r"F32 \[2\], expected an F32 scalar"),
    ],
)
def test_wrong_dtype_or_shape(copy_toy, part, make, msg):
    path = copy_toy()
    name = f"{EXPERT}.{part}"
    _replace(path, name, make(_load_one(path, name)))
    _fails(path, re.escape(shard_of(path, name).name), re.escape(EXPERT), msg)


def _load_one(path, name):
    from safetensors import safe_open

    with safe_open(shard_of(path, name), framework="pt") as f:
        return f.get_tensor(name)


@pytest.mark.parametrize("part", ["weight_scale", "weight_scale_2"])
def test_missing_scale(copy_toy, part):
    path = copy_toy()
    edit_tensors(path, lambda t: t.pop(f"{EXPERT}.{part}", None))
    _fails(path, re.escape(shard_of(path, f"{EXPERT}.weight").name), f"lacks {EXPERT}.{part}")


@pytest.mark.parametrize(
    ("part", "value"),
    [
        ("weight_scale_2", torch.tensor(float("nan"))),
        ("weight_scale_2", torch.tensor(float("inf"))),
        ("input_scale", torch.tensor(float("nan"))),
        ("weight_scale", torch.full((64, 16), 0x7F, dtype=torch.uint8).view(torch.float8_e4m3fn)),
    ],
)
def test_nan_inf_scales(copy_toy, part, value):
    path = copy_toy()
    _replace(path, f"{EXPERT}.{part}", value)
    _fails(path, re.escape(shard_of(path, f"{EXPERT}.{part}").name), re.escape(f"{EXPERT}.{part}"))


def test_exclude_list_quantizing_one_shard_of_a_fused_layer(copy_toy):
    path = copy_toy()
    extra = f"{EXPERT}"  # up_proj excluded, its gate_proj partner still quantized
    hf = json.loads((path / "hf_quant_config.json").read_text())
    hf["quantization"]["exclude_modules"].append(extra)
    (path / "hf_quant_config.json").write_text(json.dumps(hf))
    cfg = json.loads((path / "config.json").read_text())
    cfg["quantization_config"]["ignore"].append(extra)
    (path / "config.json").write_text(json.dumps(cfg))
    _fails(path, "hf_quant_config.json", re.escape("model.layers.1.mlp.experts.3.gate_proj"),
           "both must be quantized or both excluded")  # fmt: skip


def test_descriptions_that_disagree(copy_toy):
    path = copy_toy()
    cfg = json.loads((path / "config.json").read_text())
    cfg["quantization_config"]["ignore"].remove("*self_attn*")
    (path / "config.json").write_text(json.dumps(cfg))
    _fails(path, "disagree", re.escape("*self_attn*"))


def test_config_layer_count_disagrees_with_tensors(copy_toy):
    path = copy_toy()
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(num_hidden_layers=1, indexer_types=["full"], mlp_layer_types=["dense"])
    cfg.pop("index_topk_freq", None)
    (path / "config.json").write_text(json.dumps(cfg))
    _fails(path, r"num_hidden_layers=1 \(\+1 MTP\) but the tensors have layers up to 2")


def test_unexpected_and_missing_tensor_names(copy_toy):
    path = copy_toy()

    def edit(t):
        if "model.norm.weight" in t:
            t["model.norm.weights"] = t.pop("model.norm.weight")

    edit_tensors(path, edit)
    _fails(path, r"model\.norm\.weight: missing", r"model\.norm\.weights: unexpected tensor")


def test_clean_toy_has_no_issues(nvfp4_toys):
    for path in nvfp4_toys.values():
        assert Checkpoint.open(path).report().issues == []

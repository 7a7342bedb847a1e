"""An NVFP4 toy checkpoint loads into the reference model with the dequantised weights."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from glm52_plugin.config import Glm52Config
from glm52_plugin.reference import Glm52ForCausalLM
from tests.checkpoint.conftest import copy_indexer_to_shared_layer, edit_tensors
from tests.conftest import prompt_ids

SPEC_E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def _spec_dequantize(packed: torch.Tensor, scale: torch.Tensor, scale_2: torch.Tensor):
    """Spec 10.3, written out: W[n, 16b+i] = E2M1(code) * f32(scale[n, b]) * scale_2, with the
    two scales multiplied first as vLLM ``dequantize_to_dtype`` does (left to right differs by
    up to one f32 ulp, since then only one product rounds)."""
    lo, hi = packed & 0xF, packed >> 4
    codes = torch.stack([lo, hi], dim=-1).reshape(packed.shape[0], -1).long()
    values = torch.tensor(SPEC_E2M1)[codes]
    return values * (scale.float() * scale_2.float()).repeat_interleave(16, dim=1)


def _all_tensors(directory: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for file in sorted(directory.glob("*.safetensors")):
        with safe_open(file, framework="pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118
    return out


@pytest.mark.parametrize("layers", [2, 8])
def test_nvfp4_toy_logits_match_model_built_from_dequantised_weights(nvfp4_toys, layers):
    path = nvfp4_toys[layers]
    loaded = Glm52ForCausalLM.from_pretrained(path, dtype=torch.float32, progress=False)

    raw = _all_tensors(path)
    state: dict[str, torch.Tensor] = {}
    for name, t in raw.items():
        if name.endswith((".weight_scale", ".weight_scale_2", ".input_scale")):
            continue
        if t.dtype == torch.uint8:
            m = name.removesuffix(".weight")
            t = _spec_dequantize(t, raw[f"{m}.weight_scale"], raw[f"{m}.weight_scale_2"])
        state[name] = t.float()
    cfg = Glm52Config.from_pretrained(path)
    built = Glm52ForCausalLM(cfg, dtype=torch.float32)
    built.load_state_dict(state, strict=True)
    built.eval()

    ids = prompt_ids(24)
    assert torch.equal(loaded(ids), built(ids))
    n_quantized = sum(t.dtype == torch.uint8 for t in raw.values())
    assert n_quantized == 3 * cfg.n_routed_experts * (layers - 1)  # routed experts, layers 1..L-1


def test_nvfp4_toy_is_close_to_its_bf16_source(nvfp4_toys, toy_checkpoints):
    q = Glm52ForCausalLM.from_pretrained(nvfp4_toys[2], dtype=torch.float32, progress=False)
    b = Glm52ForCausalLM.from_pretrained(toy_checkpoints[2], dtype=torch.float32, progress=False)
    ids = prompt_ids(12)
    lq, lb = q(ids), b(ids)
    cos = torch.nn.functional.cosine_similarity(lq.flatten(), lb.flatten(), dim=0)
    assert cos > 0.98
    assert not torch.equal(lq, lb)  # the experts really were quantised


@pytest.mark.parametrize("keep", ["hf_quant_config.json", "config.json"])
def test_either_quant_description_alone_loads(copy_toy, keep):
    path = copy_toy(2)
    if keep == "config.json":
        (path / "hf_quant_config.json").unlink()
    else:
        cfg = json.loads((path / "config.json").read_text())
        del cfg["quantization_config"]
        (path / "config.json").write_text(json.dumps(cfg))
    model = Glm52ForCausalLM.from_pretrained(path, dtype=torch.float32, progress=False)
    assert torch.isfinite(model(prompt_ids(8))).all()


def test_both_descriptions_written_and_agree(nvfp4_toys):
    path = nvfp4_toys[8]
    hf = json.loads((path / "hf_quant_config.json").read_text())["quantization"]
    qc = json.loads((path / "config.json").read_text())["quantization_config"]
    assert hf["quant_algo"] == qc["quant_algo"] == "NVFP4"
    assert hf["group_size"] == qc["config_groups"]["group_0"]["weights"]["group_size"] == 16
    assert qc["quant_method"] == "modelopt"
    # spec 16.3: lm_head, routers, attention, dense layer 0 and the MTP layer stay BF16
    for pattern in ("lm_head", "*mlp.gate*", "*self_attn*", "model.layers.0*", "model.layers.8*"):
        assert pattern in hf["exclude_modules"]
    assert hf["exclude_modules"] == qc["ignore"]


def test_shared_layer_indexer_tensors_give_one_warning_and_the_same_model(
    copy_toy, nvfp4_toys, caplog
):
    path = copy_toy(2)
    edit_tensors(path, copy_indexer_to_shared_layer)
    with caplog.at_level(logging.WARNING, logger="glm52_plugin.checkpoint.reader"):
        model = Glm52ForCausalLM.from_pretrained(path, dtype=torch.float32, progress=False)
    added = sum(n.startswith("model.layers.1.self_attn.indexer.") for n in _all_tensors(path))
    lines = [r.getMessage() for r in caplog.records if "IndexShare" in r.getMessage()]
    assert len(lines) == 1, lines  # one line, not one per tensor
    assert f"ignoring {added} indexer tensor(s) on shared IndexShare layers [1]" in lines[0]
    clean = Glm52ForCausalLM.from_pretrained(nvfp4_toys[2], dtype=torch.float32, progress=False)
    ids = prompt_ids(24)
    assert torch.equal(model(ids), clean(ids))

"""SGLang's GLM-5.2 MTP draft (GlmMoeDsaForCausalLMNextN) on CPU, as far as SGLang allows: its
layers need CUDA (sgl_kernel), so the class is exercised without building them.

- Weight loading: our NextN override hands SGLang's in-tree NextN loader every tensor of the
  fitted toy's MTP layer (its indexer included), bit for bit, and fails naming the tensor when
  the MTP layer's indexer is missing.
- IndexShare across draft steps: SGLang's own ``IndexTopKShareState`` (what the EAGLE worker
  wraps the draft steps in, enabled by the config's ``index_share_for_mtp_iteration``) carries
  the first step's top-k to the later steps, and our toy config turns that on.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("sglang", reason="SGLang is not installed in this environment")

from safetensors import safe_open

from glm52_plugin.config import Glm52Config


def _mtp_tensors(path) -> dict[str, torch.Tensor]:
    cfg = Glm52Config.from_pretrained(path)
    prefix = f"model.layers.{cfg.mtp_layer_index}."
    index = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
    out = {}
    for name, fname in index.items():
        if name.startswith(prefix):
            with safe_open(path / fname, framework="pt") as f:
                out[name] = f.get_tensor(name)
    return out


def _nextn(monkeypatch, cfg: Glm52Config, seen: dict):
    from sglang.srt.models import glm4_moe

    from glm52_plugin.sglang.models.glm_moe_dsa import GlmMoeDsaForCausalLMNextN

    monkeypatch.setattr(
        glm4_moe.GlmMoeDsaForCausalLMNextN,
        "load_weights",
        lambda self, weights, *a, **k: seen.update(weights),
    )
    model = object.__new__(GlmMoeDsaForCausalLMNextN)  # skip __init__: no layers, no GPU
    model.glm52_config = cfg
    return model


@pytest.mark.parametrize("layers", [2, 8])
def test_nextn_loader_gets_every_mtp_tensor_unchanged(toy_checkpoints, layers, monkeypatch):
    path = toy_checkpoints[layers]
    cfg = Glm52Config.from_pretrained(path)
    tensors = _mtp_tensors(path)
    assert f"model.layers.{cfg.mtp_layer_index}.self_attn.indexer.wk.weight" in tensors
    seen: dict = {}
    _nextn(monkeypatch, cfg, seen).load_weights(iter(tensors.items()))
    assert seen.keys() == tensors.keys()
    assert all(torch.equal(seen[n], t) for n, t in tensors.items())


def test_nextn_without_its_indexer_fails_naming_the_layer(toy_checkpoints, monkeypatch):
    path = toy_checkpoints[2]
    cfg = Glm52Config.from_pretrained(path)
    tensors = _mtp_tensors(path)
    mtp = cfg.mtp_layer_index
    broken = {n: t for n, t in tensors.items() if ".self_attn.indexer." not in n}
    with pytest.raises(ValueError, match=f"layer {mtp}"):
        _nextn(monkeypatch, cfg, {}).load_weights(iter(broken.items()))


def test_index_topk_share_carries_the_first_draft_steps_topk(toy_config) -> None:
    from sglang.srt.layers.attention.index_topk_share import IndexTopKShareState

    assert toy_config.to_hf_dict()["index_share_for_mtp_iteration"] is True
    spec_info = SimpleNamespace(dsa_topk_indices=None, dsa_seed_topk_capture=None)
    forward_batch = SimpleNamespace(
        spec_info=spec_info,
        reuse_dsa_topk_indices=False,
        forward_mode=SimpleNamespace(  # a draft decode step, no context parallelism
            is_extend=lambda include_draft_extend_v2=False: False,
            is_context_parallel_extend=lambda: False,
        ),
    )
    step0_topk = torch.arange(16).view(1, 16)
    with IndexTopKShareState.mtp_iteration(forward_batch, enabled=True) as state:
        assert state.topk_indices is None  # step 0 runs the MTP layer's indexer
        state.update(step0_topk)
        state.publish()
        for _ in range(2):  # steps 1, 2: what the NextN forward reads as prev_topk_indices
            later = IndexTopKShareState.from_mtp_carry(forward_batch)
            assert later.topk_indices is step0_topk
    assert spec_info.dsa_topk_indices is None  # cleared after the draft steps
    assert not forward_batch.reuse_dsa_topk_indices
    with IndexTopKShareState.mtp_iteration(forward_batch, enabled=False) as state:
        assert state is None  # the flag off: every draft step runs the indexer

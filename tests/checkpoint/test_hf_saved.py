"""Checkpoints saved by transformers (tests/hf_saved.py): what transformers writes, and that the
config fill, the MTP decision by tensors, the validator, ``glm52 inspect`` and the reference all
take them; a partly present MTP layer stays an error naming its missing tensors."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from safetensors import safe_open

from glm52_plugin.checkpoint import Checkpoint, CheckpointError
from glm52_plugin.checkpoint.names import layer_of
from glm52_plugin.config import GLM52_FILLS
from tests.checkpoint.conftest import edit_tensors
from tests.conftest import prompt_ids
from tests.hf_saved import save_with_transformers

transformers = pytest.importorskip("transformers")
MESSAGE = "no MTP layer 2 in the checkpoint: MTP speculative decoding unavailable"


def _dtypes(path) -> dict[str, str]:
    out = {}
    for f in path.glob("*.safetensors"):
        with safe_open(f, "pt") as g:
            out.update({n: g.get_slice(n).get_dtype() for n in g.keys()})  # noqa: SIM118
    return out


def test_what_transformers_writes(hf_saved_checkpoints, toy_checkpoints) -> None:
    saved, toy = hf_saved_checkpoints[2], toy_checkpoints[2]
    raw = json.loads((saved / "config.json").read_text())
    assert not set(GLM52_FILLS) & set(raw)  # every field the fill covers is missing
    assert raw["indexer_types"] == ["full", "shared"]  # the schedule comes as a list
    before, after = _dtypes(toy), _dtypes(saved)
    assert {n for n in before if layer_of(n) == 2}  # the toy has its MTP layer 2...
    assert set(after) == {n for n in before if layer_of(n) != 2}  # ...transformers drops it
    # dtypes change only where transformers' model class keeps modules in fp32
    from transformers import GlmMoeDsaForCausalLM

    fp32 = [*GlmMoeDsaForCausalLM._keep_in_fp32_modules_strict,
            *(GlmMoeDsaForCausalLM._keep_in_fp32_modules or [])]  # fmt: skip
    for name in after:
        if after[name] != before[name]:
            assert after[name] == "F32", name
            assert any(m in name for m in fp32), name


def test_checkpoint_settles_mtp_by_tensors_with_one_warning(hf_saved_checkpoints) -> None:
    ckpt = Checkpoint.open(hf_saved_checkpoints[2])
    assert ckpt.config.mtp_layer_index is None
    assert ckpt.config.mtp_layer_absent
    assert set(ckpt.config.filled_fields) == set(GLM52_FILLS)
    report = ckpt.report()
    assert [(i.level, i.message) for i in report.issues] == [("warning", MESSAGE)]


def test_declared_mtp_layer_without_tensors_is_the_same_warning(toy_checkpoints, tmp_path) -> None:
    # loading with the toy's own config keeps num_nextn_predict_layers=1 but still drops layer 2
    saved = save_with_transformers(toy_checkpoints[2], tmp_path / "kept", keep_config=True)
    assert json.loads((saved / "config.json").read_text())["num_nextn_predict_layers"] == 1
    report = Checkpoint.open(saved).report()
    assert [(i.level, i.message) for i in report.issues] == [("warning", MESSAGE)]


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "filled"])
def test_partly_present_mtp_layer_names_the_missing_tensors(
    toy_checkpoints, tmp_path, declared: bool
) -> None:
    path = tmp_path / "partial"
    shutil.copytree(toy_checkpoints[2], path)
    gone = {"model.layers.2.eh_proj.weight", "model.layers.2.mlp.gate.e_score_correction_bias"}
    edit_tensors(path, lambda t: [t.pop(n) for n in gone if n in t])
    if not declared:
        raw = json.loads((path / "config.json").read_text())
        del raw["num_nextn_predict_layers"]
        (path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError) as e:
        Checkpoint.open(path).check()
    for name in gone:
        assert f"{name}: missing from the checkpoint" in str(e.value)


def test_inspect_exits_0_with_that_one_warning(hf_saved_checkpoints, capsys) -> None:
    from glm52_plugin.cli.main import main

    assert main(["inspect", "--json", str(hf_saved_checkpoints[2])]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["errors"] == []
    assert len(out["warnings"]) == 1
    assert MESSAGE in out["warnings"][0]


def test_reference_loads_the_main_model_and_refuses_mtp_drafts(
    hf_saved_checkpoints, toy_models, caplog
) -> None:
    from glm52_plugin.reference import Glm52ForCausalLM
    from glm52_plugin.reference.generate import generate

    with caplog.at_level(logging.WARNING):
        model = Glm52ForCausalLM.from_pretrained(
            hf_saved_checkpoints[2], dtype=torch.float32, progress=False
        )
    assert [r.getMessage().count(MESSAGE) for r in caplog.records].count(1) == 1
    assert model.config.mtp_layer_index is None
    ids = prompt_ids(30)
    # same BF16 weights as the toy (the router weight widened to F32 exactly): same logits
    torch.testing.assert_close(model(ids), toy_models[2](ids), rtol=0, atol=0)
    with pytest.raises(ValueError, match=f"mtp_draft_tokens: {MESSAGE}"):
        generate(model, ids, max_new_tokens=2, mtp_draft_tokens=2)


def test_f32_for_bf16_is_accepted_but_bf16_for_f32_still_warns(toy_checkpoints, tmp_path) -> None:
    path = tmp_path / "dtypes"
    shutil.copytree(toy_checkpoints[2], path)
    widened, narrowed = "model.norm.weight", "model.layers.1.mlp.gate.e_score_correction_bias"

    def edit(t: dict) -> None:
        if widened in t:
            t[widened] = t[widened].float()
        if narrowed in t:
            t[narrowed] = t[narrowed].bfloat16()

    edit_tensors(path, edit)
    issues = Checkpoint.open(path).report().issues
    assert [(i.level, i.tensor) for i in issues] == [("warning", narrowed)]


def test_engine_config_fills_the_engines_hf_config_with_one_line(
    hf_saved_checkpoints, toy_checkpoints, caplog
) -> None:
    from transformers import AutoConfig

    from glm52_plugin.checkpoint.preload import engine_config

    path = hf_saved_checkpoints[2]
    hf = AutoConfig.from_pretrained(path)  # what an engine holds
    assert getattr(hf, "scoring_func", None) is None
    with caplog.at_level(logging.INFO):
        cfg = engine_config(hf, str(path), logging.getLogger("test"))
    assert cfg.mtp_layer_absent
    assert (hf.topk_method, hf.scoring_func, hf.indexer_rope_interleave) == (
        "noaux_tc",
        "sigmoid",
        True,
    )
    assert hf.num_nextn_predict_layers == 0  # what the tensors say
    lines = [r.getMessage() for r in caplog.records if r.name == "test"]
    assert len(lines) == 1
    assert "config.json omits num_nextn_predict_layers, topk_method" in lines[0]
    assert MESSAGE in lines[0]
    # a complete checkpoint: nothing filled, nothing said
    caplog.clear()
    hf = AutoConfig.from_pretrained(toy_checkpoints[2])
    with caplog.at_level(logging.INFO):
        assert (
            engine_config(hf, str(toy_checkpoints[2]), logging.getLogger("test")).mtp_layer_index
            == 2
        )
    assert not [r for r in caplog.records if r.name == "test"]


def test_require_mtp_layer_is_one_line_naming_the_layer(
    hf_saved_checkpoints, toy_checkpoints
) -> None:
    from glm52_plugin.checkpoint.preload import require_mtp_layer

    with pytest.raises(CheckpointError, match=f"{MESSAGE}.*model.layers.2") as e:
        require_mtp_layer(str(hf_saved_checkpoints[2]))
    assert "\n" not in str(e.value)
    require_mtp_layer(str(toy_checkpoints[2]))  # has its MTP layer: nothing raised

"""SGLang sees our classes: strict import, registry precedence, activation by entry point alone, opt-outs.

Runs in the sglang environment (scripts/test_engines.sh). Registry state is process-global and
SGLang loads plugins once per process, so each activation check runs in a fresh interpreter.
Nothing here builds an SGLang layer: that needs sgl_kernel, i.e. libcuda and a GPU (sglang 0.5.23's
``import sgl_kernel`` fails without libcuda.so.1, so initialize_model_parallel does too).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip(
    "sglang", reason="SGLang not installed: run in the sglang env (scripts/test_engines.sh)"
)

from glm52_plugin.config import Glm52Config
from glm52_plugin.sglang import plugin
from tests.probe import run_probe

pytestmark = pytest.mark.sglang

OURS = "glm52_plugin.sglang.models.glm_moe_dsa"
IN_TREE = "sglang.srt.models.glm4_moe"
CLEAN_ENV = ("SGLANG_EXTERNAL_MODEL_PACKAGE", "SGLANG_PLUGINS", "GLM52_DISABLE_PLUGIN")

# Loads plugins the way every SGLang process does, then asks the registry for both arch names before
# and after the lazy in-tree defaults are merged in.
PROBE = """
import json, sys
from importlib.metadata import entry_points
from sglang.srt.plugins import load_plugins
load_plugins()
deferred = "sglang.srt.models.registry" not in sys.modules
from sglang.srt.models.registry import ModelRegistry
def where():
    return {a: ModelRegistry.resolve_model_cls([a])[0].__module__ for a in %(archs)r}
first = where()
ModelRegistry._load_default_models()
print("PROBE " + json.dumps({
    "entry_points": {ep.name: ep.value for ep in entry_points(group="sglang.srt.plugins")},
    "first": first,
    "after_defaults": where(),
    "plugin_imported": "glm52_plugin.sglang.plugin" in sys.modules,
    "registry_deferred": deferred,
}))
"""


def _probe(env: dict[str, str] | None = None, before: str = "") -> tuple[dict, str]:
    code = before + "\n" + PROBE % {"archs": plugin.ARCHS}
    return run_probe(code, env, CLEAN_ENV, timeout=600)


def _plugin_lines(output: str) -> list[str]:
    return [x for x in output.splitlines() if "glm52_plugin 0" in x]


def test_strict_import_registers_both_names_to_our_subclasses() -> None:
    from sglang.srt.models import glm4_moe
    from sglang.srt.models.registry import import_model_classes

    classes = import_model_classes("glm52_plugin.sglang.models", strict=True)
    assert set(classes) == set(plugin.ARCHS)
    for name, cls in classes.items():
        assert cls.__module__ == OURS
        assert issubclass(cls, getattr(glm4_moe, name))  # built on the in-tree class of that name
        assert cls is not getattr(glm4_moe, name)


def test_entry_point_alone_activates_override_in_a_fresh_process() -> None:
    report, output = _probe()
    assert report["entry_points"].get("glm52") == "glm52_plugin.sglang.plugin:register"
    assert report["first"] == dict.fromkeys(plugin.ARCHS, OURS)
    assert report["after_defaults"] == dict.fromkeys(plugin.ARCHS, OURS)
    assert report["registry_deferred"] is True  # plugin load did not import every in-tree model
    lines = _plugin_lines(output)
    assert len(lines) == 1, output[-4000:]
    assert "active" in lines[0]


def test_override_applies_when_the_registry_was_imported_before_the_plugins() -> None:
    report, _ = _probe(before="import sglang.srt.models.registry")
    assert report["first"] == dict.fromkeys(plugin.ARCHS, OURS)
    assert report["after_defaults"] == dict.fromkeys(plugin.ARCHS, OURS)


def test_env_var_route_works_without_the_entry_point() -> None:
    # The documented alternative; SGLANG_PLUGINS names another plugin, so ours is not called.
    env = {"SGLANG_EXTERNAL_MODEL_PACKAGE": "glm52_plugin.sglang.models", "SGLANG_PLUGINS": "none"}
    report, _ = _probe(env)
    assert report["plugin_imported"] is False
    assert report["first"] == dict.fromkeys(plugin.ARCHS, OURS)
    assert report["after_defaults"] == dict.fromkeys(plugin.ARCHS, OURS)


def test_glm52_disable_plugin_leaves_in_tree_classes_and_says_so() -> None:
    report, output = _probe({"GLM52_DISABLE_PLUGIN": "1"})
    assert report["plugin_imported"] is True
    assert report["after_defaults"] == dict.fromkeys(plugin.ARCHS, IN_TREE)
    lines = _plugin_lines(output)
    assert len(lines) == 1, output[-4000:]
    assert "disabled by GLM52_DISABLE_PLUGIN" in lines[0]


def test_sglang_plugins_allowlist_can_exclude_us() -> None:
    report, output = _probe({"SGLANG_PLUGINS": "none"})
    assert report["plugin_imported"] is False
    assert report["after_defaults"] == dict.fromkeys(plugin.ARCHS, IN_TREE)
    assert _plugin_lines(output) == []


def test_failed_import_is_loud_not_a_silent_in_tree_fallback() -> None:
    # Make our model module unimportable: the registry entries must then be our stubs, which refuse
    # to build the model with the import error, after an ERROR traceback in the log.
    code = (
        f"import sys; sys.modules[{OURS!r}] = None\n"
        "from sglang.srt.plugins import load_plugins; load_plugins()\n"
        "from sglang.srt.models.registry import ModelRegistry\n"
        "cls, _ = ModelRegistry.resolve_model_cls(['GlmMoeDsaForCausalLM'])\n"
        "print('MODULE', cls.__module__)\n"
        "try:\n"
        "    cls(None)\n"
        "except RuntimeError as e:\n"
        "    print('RAISED', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "MODULE glm52_plugin.sglang.plugin" in proc.stdout, output[-4000:]
    assert "RAISED glm52_plugin could not import its SGLang model classes" in proc.stdout
    assert "importing glm52_plugin.sglang.models failed" in output
    assert "Traceback" in output


def _hf_config(layers: int = 8):
    from transformers import GlmMoeDsaConfig

    cfg = Glm52Config.toy(layers)
    return cfg, GlmMoeDsaConfig(**cfg.to_hf_dict())


def test_indexer_schedule_agrees_with_sglang_for_the_toys() -> None:
    from glm52_plugin.sglang.models.glm_moe_dsa import check_indexer_schedule, resolve_config

    for layers in (2, 8):
        cfg, hf = _hf_config(layers)
        assert resolve_config(hf).indexer_types == cfg.indexer_types
        check_indexer_schedule(cfg, hf)


def test_indexer_schedule_disagreement_is_a_clear_error() -> None:
    from glm52_plugin.sglang.models.glm_moe_dsa import check_indexer_schedule

    cfg, hf = _hf_config(8)
    hf.indexer_types = ["full"] * 8  # what SGLang would build differs from our resolved schedule
    with pytest.raises(ValueError, match=r"layers \[3, 4, 5, 7\].*ours FFFSSSFS, SGLang FFFFFFFF"):
        check_indexer_schedule(cfg, hf)


def test_load_weights_filters_and_checks_without_building_layers(monkeypatch) -> None:
    # The inherited loader needs built (CUDA) layers; record what our override hands it instead.
    from sglang.srt.models import glm4_moe

    from glm52_plugin.sglang.models.glm_moe_dsa import GlmMoeDsaForCausalLM
    from glm52_plugin.toy.weights import toy_state_dict

    seen: list[str] = []
    monkeypatch.setattr(
        glm4_moe.GlmMoeDsaForCausalLM,
        "load_weights",
        lambda self, weights, *a, **k: seen.extend(n for n, _ in weights),
    )
    cfg = Glm52Config.toy(8)
    model = object.__new__(GlmMoeDsaForCausalLM)  # skip __init__: no layers, no GPU
    model.glm52_config = cfg
    model.glm52_source = ""  # no local checkpoint: header validation is skipped (tested below)
    names = list(toy_state_dict(cfg, 0))
    extra = [f"model.layers.3.self_attn.indexer.{m}.weight" for m in ("wq_b", "wk", "weights_proj")]
    model.load_weights((n, torch.empty(0)) for n in names + extra)
    assert (
        seen == names
    )  # shared layer 3's indexer tensors dropped, all else (MTP layer 8 too) kept

    seen.clear()
    broken = [n for n in names if not n.startswith("model.layers.6.self_attn.indexer.")]
    with pytest.raises(ValueError, match="layer 6"):
        model.load_weights((n, torch.empty(0)) for n in broken)


def test_load_weights_validates_checkpoint_headers_before_any_tensor(
    monkeypatch, toy_nvfp4_checkpoints, tmp_path
) -> None:
    """A corrupt NVFP4 checkpoint (an expert's weight_scale_2 missing) fails naming the tensor,
    before SGLang's loader has seen a single weight; the clean toy passes through."""
    import shutil

    from safetensors.torch import load_file, save_file
    from sglang.srt.models import glm4_moe

    from glm52_plugin.checkpoint import CheckpointError
    from glm52_plugin.sglang.models.glm_moe_dsa import GlmMoeDsaForCausalLM
    from glm52_plugin.toy.weights import toy_state_dict

    seen: list[str] = []
    monkeypatch.setattr(
        glm4_moe.GlmMoeDsaForCausalLM,
        "load_weights",
        lambda self, weights, *a, **k: seen.extend(n for n, _ in weights),
    )
    good = toy_nvfp4_checkpoints[2]
    model = object.__new__(GlmMoeDsaForCausalLM)
    model.glm52_config = Glm52Config.from_pretrained(good)
    model.glm52_source = str(good)
    names = list(toy_state_dict(model.glm52_config, 0))
    model.load_weights((n, torch.empty(0)) for n in names)
    assert seen == names

    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    victim = "model.layers.1.mlp.experts.3.down_proj.weight_scale_2"
    index = json.loads((bad / "model.safetensors.index.json").read_text())
    shard = bad / index["weight_map"].pop(victim)
    tensors = load_file(shard)
    del tensors[victim]
    save_file(tensors, shard, {"format": "pt"})
    (bad / "model.safetensors.index.json").write_text(json.dumps(index))
    model.glm52_source = str(bad)
    seen.clear()
    with pytest.raises(CheckpointError, match=r"experts\.3\.down_proj"):
        model.load_weights(iter([("model.norm.weight", torch.empty(0))]))
    assert seen == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: SGLang layers need sgl_kernel/libcuda")  # fmt: skip
def test_model_constructs_and_logs_on_gpu(caplog) -> None:
    from sglang.test.layer_ut_utils import init_single_process_dist

    from glm52_plugin.sglang.models.glm_moe_dsa import GlmMoeDsaForCausalLM

    init_single_process_dist()
    _, hf = _hf_config(2)
    with caplog.at_level("INFO", logger=OURS):
        GlmMoeDsaForCausalLM(hf)
    assert "GlmMoeDsaForCausalLM override active" in caplog.text

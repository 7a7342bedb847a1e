"""Building the fused CPU DSA kernels: the opt-out switch and the fallback when a build fails.
Their math is tested against the reference in test_sparse_mla_batching.py."""

from __future__ import annotations

import logging

import pytest

from glm52_plugin.vllm import cpu_dsa


@pytest.fixture
def fresh_state(monkeypatch):
    monkeypatch.setattr(cpu_dsa, "_state", {"tried": False, "ops": None, "error": None})


@pytest.mark.usefixtures("fresh_state")
def test_switch_turns_the_kernels_off(monkeypatch) -> None:
    monkeypatch.setenv(cpu_dsa.ENV_SWITCH, "0")
    assert cpu_dsa.kernels() is None
    assert cpu_dsa.build_error() == ""


@pytest.mark.usefixtures("fresh_state")
def test_failed_build_falls_back_with_one_warning(monkeypatch, tmp_path, caplog) -> None:
    broken = tmp_path / "cpu_dsa.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(cpu_dsa, "SOURCE", broken)
    monkeypatch.delenv(cpu_dsa.ENV_SWITCH, raising=False)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "build"))
    with caplog.at_level(logging.WARNING, logger=cpu_dsa.__name__):
        assert cpu_dsa.kernels() is None
        assert cpu_dsa.kernels() is None  # tried once, not rebuilt per call
    warnings = [r for r in caplog.records if "using eager torch ops" in r.getMessage()]
    assert len(warnings) == 1
    assert "RuntimeError" in cpu_dsa.build_error()


def test_build_name_follows_source_and_host(monkeypatch, tmp_path) -> None:
    name = cpu_dsa.build_name()
    monkeypatch.setattr(cpu_dsa, "_host_flags", lambda: "flags : sse2")
    assert cpu_dsa.build_name() != name  # -march=native code is per instruction set
    other = tmp_path / "cpu_dsa.cpp"
    other.write_text(cpu_dsa.SOURCE.read_text() + "\n// changed\n")
    monkeypatch.setattr(cpu_dsa, "SOURCE", other)
    assert cpu_dsa.build_name() not in (name, "")

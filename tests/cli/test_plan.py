"""``glm52 plan`` output (table, JSON, chart, errors)."""

from __future__ import annotations

import json

import pytest

from glm52_plugin.cli.main import main


def test_plan_json_b200(capsys):
    assert main(["plan", "--gpu", "B200", "--tp", "8", "--kv-dtype", "bf16", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["params"]["total"] == pytest.approx(753.33e9, abs=0.01e9)
    assert r["kv_bytes_per_token"] == 79 * 1152 + 22 * 132
    budget = 180e9 * 0.9 - r["weight_bytes_per_gpu"]
    assert r["tokens_fit_per_gpu"] == int(budget // r["kv_bytes_per_token"])
    assert r["flops_per_token"]["published_ratio"] == 2.9


def test_plan_table_and_chart(capsys, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib not installed")
    png = tmp_path / "plan.png"
    assert main(["plan", "--gpu", "H100", "--tp", "8", "--chart", str(png)]) == 0
    out = capsys.readouterr().out
    assert "753.33 B" in out
    assert "2.9x" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plan_rejects_bad_ep(capsys):
    assert main(["plan", "--tp", "8", "--ep", "4"]) == 2
    assert "ep must be" in capsys.readouterr().out


def test_plan_from_checkpoint(capsys, toy_checkpoints):
    assert main(["plan", "--checkpoint", str(toy_checkpoints[2]), "--tp", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["precision"] == "bf16"
    assert r["params"]["main"] + r["params"]["mtp"] == pytest.approx(2.29e6 + 1.25e6, rel=0.01)

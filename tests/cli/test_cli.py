"""The glm52 command line: --help of every command, make-toy, schedule, and the main job."""

from __future__ import annotations

import json

import pytest

from glm52_plugin.cli.main import available_commands, main


@pytest.mark.parametrize("command", [None, *available_commands()])
def test_help_of_every_command(command, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"] if command is None else [command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: glm52" in out


def test_every_listed_command_is_available(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in available_commands():
        assert command in out
    assert {"generate", "make-toy", "schedule"} <= set(available_commands())


def test_generate_with_no_arguments_builds_a_toy_and_generates(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("GLM52_TOY_DIR", str(tmp_path))
    assert main(["generate", "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr().out
    assert "IndexShare: 1 full / 1 shared" in out
    assert "tokens/s" in out
    assert list(tmp_path.glob("toy-2l-*/model.safetensors.index.json"))
    # the second run reuses the toy and emits the same greedy tokens as JSON
    assert main(["generate", "--max-new-tokens", "6", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["generate", "--max-new-tokens", "6", "--json", "--mtp", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == first["tokens"]
    assert len(first["tokens"]) == 6


def test_make_toy_then_schedule(tmp_path, capsys) -> None:
    assert main(["make-toy", str(tmp_path / "t8"), "--layers", "8"]) == 0
    capsys.readouterr()
    assert main(["schedule", str(tmp_path / "t8"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["full_layers"] == [0, 1, 2, 6]


def test_bad_checkpoint_is_one_clear_error(tmp_path, capsys) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": "big"}))
    assert main(["generate", "--model", str(tmp_path)]) == 1
    assert "hidden_size" in capsys.readouterr().err


def test_generate_nvfp4_with_packed_experts_emits_the_dequantised_tokens(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("GLM52_TOY_DIR", str(tmp_path))
    args = ["generate", "--nvfp4", "--max-new-tokens", "6", "--json"]
    assert main(args) == 0
    dequantised = json.loads(capsys.readouterr().out)["tokens"]
    assert main([*args, "--packed-experts"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == dequantised
    # a BF16 checkpoint has nothing to keep packed: one clear error, not a silent dense load
    assert main(["generate", "--max-new-tokens", "2", "--packed-experts"]) == 1
    assert "needs an NVFP4 checkpoint" in capsys.readouterr().err

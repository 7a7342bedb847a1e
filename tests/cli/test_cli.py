"""The glm52 command line: --help of every command, the one error convention, make-toy,
schedule, and the main job."""

from __future__ import annotations

import argparse
import json
import subprocess
import urllib.error

import pytest

from glm52_plugin.cli.generate import TOY_NOTE
from glm52_plugin.cli.main import available_commands, build_parser, main
from tests.cli.helpers import assert_one_error, glm52, glm52_command, glm52_env


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
    captured = capsys.readouterr()
    out = captured.out
    assert captured.err.count(TOY_NOTE) == 1
    assert "IndexShare: 1 full / 1 shared" in out
    assert "tokens/s" in out
    assert list(tmp_path.glob("toy-2l-*/model.safetensors.index.json"))
    # the second run reuses the toy and emits the same greedy tokens as JSON
    assert main(["generate", "--max-new-tokens", "6", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["generate", "--max-new-tokens", "6", "--json", "--mtp", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == first["tokens"]
    assert len(first["tokens"]) == 6


def test_schedule_of_a_toy(toy_checkpoints, capsys) -> None:
    # make-toy itself: tests/cli/test_make_toy.py; the shared 8-layer toy saves writing another
    assert main(["schedule", str(toy_checkpoints[8]), "--json"]) == 0
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


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_has_help_and_help_shows_defaults(capsys) -> None:
    parser = build_parser()
    for command, sub in _subparsers(parser).items():
        for action in sub._actions:
            assert action.help, (command, action.dest)
    with pytest.raises(SystemExit):
        main(["plan", "--help"])
    out = capsys.readouterr().out
    assert "(default: 8)" in out  # --tp
    assert "(default: 0.9)" in out  # --gpu-util


def test_usage_errors_exit_2_with_the_command_prefix() -> None:
    message = assert_one_error(glm52("plan", "--tp", "many"), "plan", 2)
    assert "argument --tp: invalid int value: 'many'" in message
    message = assert_one_error(glm52("make-toy"), "make-toy", 2)
    assert "the following arguments are required: out" in message
    result = glm52("no-such-command")
    assert result.returncode == 2
    assert "glm52: error: argument COMMAND: invalid choice: 'no-such-command'" in result.stderr


def test_a_missing_folder_is_one_wording_in_every_command(tmp_path) -> None:
    missing = tmp_path / "nope"
    for args in (["inspect", missing], ["schedule", missing], ["generate", "--model", missing],
                 ["plan", "--checkpoint", missing]):  # fmt: skip
        result = glm52(*map(str, args))
        assert assert_one_error(result, args[0], 1) == f"{missing}: no such checkpoint folder\n"


def test_glm52_debug_shows_the_traceback(tmp_path) -> None:
    result = glm52("inspect", str(tmp_path / "nope"), env={"GLM52_DEBUG": "1"})
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().endswith(
        f"glm52 inspect: error: {tmp_path / 'nope'}: no such checkpoint folder"
    )


def test_a_closed_pipe_ends_quietly(toy_checkpoints) -> None:
    # `glm52 inspect DIR | head -1`: the reader is gone before glm52 writes
    proc = subprocess.Popen(
        glm52_command("inspect", str(toy_checkpoints[2]), "--verbose"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=glm52_env(),
    )
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert err.decode() == ""
    assert proc.returncode == 141  # 128 + SIGPIPE, as `yes | head -1` reports


def test_an_unreachable_server_and_ctrl_c_are_one_line(monkeypatch, capsys) -> None:
    import glm52_plugin.cli.schedule as schedule

    def refused(args):
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr(schedule, "run", refused)
    assert main(["schedule"]) == 1
    assert (
        capsys.readouterr().err
        == "glm52 schedule: error: cannot reach the server: Connection refused\n"
    )

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(schedule, "run", interrupted)
    assert main(["schedule"]) == 130
    assert capsys.readouterr().err == "glm52 schedule: error: interrupted\n"

    def bug(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(schedule, "run", bug)
    assert main(["schedule"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("glm52 schedule: error: ZeroDivisionError: division by zero")
    assert "GLM52_DEBUG=1" in err
    assert "Traceback" not in err

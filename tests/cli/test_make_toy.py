"""``glm52 make-toy OUT`` never loses a user's file: it refuses what is not its own toy, replaces
its own only with --force, cleans up after every failure and writes files others can read."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess

import pytest

from glm52_plugin.cli.main import main
from glm52_plugin.toy.writer import MARKER, atomic_directory
from tests.cli.helpers import assert_one_error, glm52, glm52_command, glm52_env


def _tree(path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_refuses_a_folder_or_file_that_is_not_a_toy(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "data").mkdir()
    before = _tree(tmp_path)
    # the report's `glm52 make-toy .` in a working folder: refused, nothing touched
    message = assert_one_error(glm52("make-toy", ".", cwd=tmp_path), "make-toy", 1)
    assert "not empty" in message
    assert MARKER in message
    message = assert_one_error(glm52("make-toy", "notes.txt", cwd=tmp_path), "make-toy", 1)
    assert "is a file, not a directory" in message
    message = assert_one_error(glm52("make-toy", "notes.txt/sub", cwd=tmp_path), "make-toy", 1)
    assert "notes.txt is a file" in message
    assert _tree(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "notes.txt"]  # no temp folder


def test_force_replaces_only_a_toy_glm52_wrote(tmp_path, capsys):
    out = tmp_path / "toy"
    assert main(["make-toy", str(out)]) == 0
    listed = json.loads((out / MARKER).read_text())["files"]
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, *listed])
    first = _tree(out)
    capsys.readouterr()
    # a second run needs --force
    assert main(["make-toy", str(out), "--nvfp4"]) == 1
    assert "pass --force" in capsys.readouterr().err
    assert _tree(out) == first
    # --force swaps the BF16 toy for the NVFP4 one: no file of the old toy is left over
    assert main(["make-toy", str(out), "--nvfp4", "--force"]) == 0
    listed = json.loads((out / MARKER).read_text())["files"]
    assert "hf_quant_config.json" in listed
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, *listed])
    # a file the user added to the toy folder blocks --force: it is not the toy's to remove
    (out / "my-notes.txt").write_text("keep me")
    capsys.readouterr()
    assert main(["make-toy", str(out), "--force"]) == 1
    assert "my-notes.txt" in capsys.readouterr().err
    assert (out / "my-notes.txt").read_text() == "keep me"
    assert "hf_quant_config.json" in listed  # still the NVFP4 toy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]


def test_an_empty_existing_folder_takes_the_toy(tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    assert main(["make-toy", str(out)]) == 0
    assert (out / "model.safetensors.index.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


@pytest.mark.parametrize(
    ("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)]
)
def test_modes_follow_the_umask(tmp_path, capsys, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        assert main(["make-toy", str(tmp_path / "toy")]) == 0
    finally:
        os.umask(old)
    out = tmp_path / "toy"
    assert stat.S_IMODE(out.stat().st_mode) == dir_mode
    modes = {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes == {file_mode}


def _fail_while_writing(out, force=False) -> None:
    with atomic_directory(out, force=force) as tmp:
        (tmp / "half.safetensors").write_bytes(b"x")
        raise RuntimeError("disk full")


def test_a_failure_leaves_no_temp_folder_and_the_old_toy_intact(tmp_path, capsys):
    out = tmp_path / "toy"
    with pytest.raises(RuntimeError, match="disk full"):
        _fail_while_writing(out)
    assert list(tmp_path.iterdir()) == []
    assert main(["make-toy", str(out)]) == 0
    before = _tree(out)
    with pytest.raises(RuntimeError, match="disk full"):
        _fail_while_writing(out, force=True)
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]


def test_ctrl_c_exits_130_without_traceback_or_temp_folder(tmp_path):
    out = tmp_path / "toy"
    proc = subprocess.Popen(
        glm52_command("make-toy", str(out), "--nvfp4"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=glm52_env(),
    )
    first = proc.stderr.read(1)  # the progress bar: the process is writing the checkpoint
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    err = (first + err).decode()
    assert "Traceback" not in err
    if proc.returncode == 0:  # finished before the signal arrived: a whole toy, nothing else
        assert (out / MARKER).is_file()
        pytest.skip("make-toy finished before Ctrl-C arrived")
    assert proc.returncode == 130, err
    assert "glm52 make-toy: error: interrupted" in err
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert leftovers in ([], ["toy"]), leftovers
    if leftovers:  # the signal came after the final rename: the toy is complete
        assert (out / MARKER).is_file()

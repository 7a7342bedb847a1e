"""Run ``glm52`` as a user does: a fresh process, its exit status, stdout and stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def glm52_command(*args: str) -> list[str]:
    """The command line of ``glm52 ARGS`` with this interpreter (the console script's target)."""
    return [sys.executable, "-m", "glm52_plugin", *args]


def glm52_env(**extra: str) -> dict[str, str]:
    """The environment for a ``glm52`` child: this one, without GLM52_DEBUG unless asked for."""
    env = {k: v for k, v in os.environ.items() if k != "GLM52_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def glm52(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``glm52 ARGS`` to completion; ``env`` adds variables to the inherited environment."""
    return subprocess.run(
        glm52_command(*args),
        capture_output=True,
        text=True,
        env=glm52_env(**(env or {})),
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def assert_one_error(result: subprocess.CompletedProcess[str], command: str, code: int) -> str:
    """The error convention: exit ``code``, ``glm52 COMMAND: error: ...`` on stderr, no
    traceback. Returns the error text after the prefix."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    prefix = f"glm52 {command}: error: "
    lines = [line for line in result.stderr.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, result.stderr
    return result.stderr[result.stderr.index(prefix) + len(prefix) :]

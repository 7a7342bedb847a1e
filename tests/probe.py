"""Run a probe script in a fresh interpreter, as an engine process would start, and read its report.

The script prints one line ``PROBE <json>``; the engines' registration tests (tests/vllm,
tests/sglang) use it to see what a new process's plugin loading did.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable


def run_probe(
    code: str, env: dict[str, str] | None, drop_env: Iterable[str], timeout: int
) -> tuple[dict, str]:
    """The probe's report and its whole output (logs included); fails the test on a non-zero exit."""
    dropped = set(drop_env)
    full_env = {k: v for k, v in os.environ.items() if k not in dropped}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=timeout
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    report = next(line for line in proc.stdout.splitlines() if line.startswith("PROBE "))
    return json.loads(report.removeprefix("PROBE ")), output

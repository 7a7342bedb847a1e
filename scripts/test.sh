#!/usr/bin/env bash
# Set-up command 2: lint and run every test that can run here — the core suite in .venv, then each
# engine's suite inside its own environment (built by scripts/engine_env.sh when absent).
set -euo pipefail
cd "$(dirname "$0")/.."
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
.venv/bin/python -m pytest tests --ignore=tests/vllm --ignore=tests/sglang "$@"

if [[ -f scripts/test_engines.sh && ${GLM52_SKIP_ENGINES:-0} != 1 ]]; then
    run_pytest bash scripts/test_engines.sh
fi

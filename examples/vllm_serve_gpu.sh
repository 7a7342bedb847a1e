#!/usr/bin/env bash
# Serve nvidia/GLM-5.2-NVFP4 with vLLM 0.33 (CUDA) and glm52-plugin on one 8-GPU node.
#
#   examples/vllm_serve_gpu.sh [tp8|tp-ep|mtp] [extra `vllm serve` flags ...]
#
#   tp8    tensor parallel over 8 GPUs (the vLLM recipe's shape; 8 x B200/B300)
#   tp-ep  TP 8 for attention + expert parallel for the 256 routed experts
#   mtp    TP 8 + MTP speculative decoding with 5 draft tokens (GLM-5.2's depth; 3-5 is sensible)
#
# Hopper (8 x H100/H200): the same command; NVFP4 then runs as Marlin W4A16 (weights dequantised
# in-kernel, bf16 activations) -- check outputs with examples/check_against_reference.py first.
# GLM52_MODEL overrides the checkpoint; GLM52_DRY_RUN=1 prints the command instead of running it.
set -euo pipefail
# shellcheck source=examples/run_or_print.sh
source "$(dirname "${BASH_SOURCE[0]}")/run_or_print.sh"
mode=${1:-tp8}
[[ $# -gt 0 ]] && shift
model=${GLM52_MODEL:-nvidia/GLM-5.2-NVFP4}
cmd=(vllm serve "$model" --tensor-parallel-size 8
    --tool-call-parser glm47 --reasoning-parser glm45 --enable-auto-tool-choice)
case $mode in
    tp8) ;;
    tp-ep) cmd+=(--enable-expert-parallel) ;;
    mtp) cmd+=(--speculative-config '{"method": "mtp", "num_speculative_tokens": 5}') ;;
    *) echo "usage: $0 [tp8|tp-ep|mtp] [vllm serve flags ...]" >&2; exit 2 ;;
esac
cmd+=("$@")
run_or_print "${cmd[@]}"

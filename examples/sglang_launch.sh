#!/usr/bin/env bash
# Launch nvidia/GLM-5.2-NVFP4 with SGLang 0.5.23 and glm52-plugin on one 8-GPU node. The plugin's
# sglang.srt.plugins entry point makes SGLang use our GlmMoeDsaForCausalLM(+NextN) and parsers.
#
#   examples/sglang_launch.sh [tp8|tp-ep|mtp] [extra launch_server flags ...]
#
#   tp8    tensor parallel over 8 GPUs
#   tp-ep  TP 8 + expert parallel 8 for the routed experts
#   mtp    TP 8 + MTP (EAGLE/NextN) with SGLang's GLM defaults: 3 steps, top-k 1, 4 draft tokens
#
# Hopper: modelopt_fp4 falls back to Marlin W4A16 automatically (spec: sglang.md 6); verify output
# quality with examples/check_against_reference.py --engine sglang on a toy first.
# GLM52_MODEL overrides the checkpoint; GLM52_DRY_RUN=1 prints the command instead of running it.
set -euo pipefail
# shellcheck source=examples/run_or_print.sh
source "$(dirname "${BASH_SOURCE[0]}")/run_or_print.sh"
mode=${1:-tp8}
[[ $# -gt 0 ]] && shift
model=${GLM52_MODEL:-nvidia/GLM-5.2-NVFP4}
cmd=(python -m sglang.launch_server --model-path "$model" --tp 8 --quantization modelopt_fp4
    --tool-call-parser glm47 --reasoning-parser glm45)
case $mode in
    tp8) ;;
    tp-ep) cmd+=(--ep-size 8) ;;
    mtp) cmd+=(--speculative-algorithm EAGLE --speculative-num-steps 3
        --speculative-eagle-topk 1 --speculative-num-draft-tokens 4) ;;
    *) echo "usage: $0 [tp8|tp-ep|mtp] [launch_server flags ...]" >&2; exit 2 ;;
esac
cmd+=("$@")
run_or_print "${cmd[@]}"

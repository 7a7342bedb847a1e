#!/usr/bin/env bash
# Set-up command 1: install into .venv and run the main job on the embedded toy (no network for
# the model, no GPU): builds a toy GLM-5.2 checkpoint and chats with the reference model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/dev_env.sh
exec .venv/bin/glm52 generate "$@"

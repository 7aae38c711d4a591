#!/usr/bin/env bash
# The main job: set up both environments if needed, then render the bundled demo scene end to end —
# Blender (bpy) renders the passes through the neurender extension's render hook, the extension starts a local
# `neurender serve`, the backend renders the shot, and the frames come back as a VSE strip (out/demo/).
# Without --model a tiny RANDOM-WEIGHT model is used and the frames are noise-like patterns, not art.
#   bash scripts/demo.sh [--model SD15.safetensors --controlnet control_depth.safetensors] [--steps 20] [--frames N]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DIFFUSERS_OFFLINE=1
exec .venv-blender/bin/python scripts/demo/run_demo.py "$@"

#!/usr/bin/env bash
# The prepared GPU check (issue 15): ONE command for a CUDA machine, under 8 minutes on an H100/H200/A100/4090.
#   scripts/gpu_check.sh            SD1.5-size random model, 16 frames 512x512, 20 steps, float16: a table of
#                                   s/frame, ratio to diffusers' per-frame pipeline and peak VRAM per consistency
#                                   mode / deflicker / motion module / memory options, fp16 vs fp32, then pytest -m gpu
#   scripts/gpu_check.sh --dry-run  the same script on the CPU with the tiny model (CI: tests/backend/test_gpu_check.py)
# Environment: uses .venv. Only when nvidia-smi shows a GPU (and not for --dry-run) it creates .venv if missing,
# installs the CUDA build of torch into it if its torch cannot see the GPU, and the project's dependencies if they
# are missing. On a machine without a GPU it never installs anything.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
for a in "$@"; do [ "$a" = "--dry-run" ] && DRY=1; done
PY=.venv/bin/python
has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; }

if [ "$DRY" = 0 ]; then
  if ! has_gpu; then
    echo "gpu_check: nvidia-smi shows no NVIDIA GPU here; nothing installed. Use --dry-run for the CPU rehearsal." >&2
    exit 2
  fi
  nvidia-smi -L
  [ -x "$PY" ] || python3 -m venv .venv
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "[gpu_check] installing the CUDA build of torch into .venv (index ${NEURENDER_TORCH_INDEX:-https://download.pytorch.org/whl/cu126})"
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q --force-reinstall "${NEURENDER_TORCH_SPEC:-torch>=2.3,<2.15}" \
      --index-url "${NEURENDER_TORCH_INDEX:-https://download.pytorch.org/whl/cu126}"
  fi
  if ! "$PY" -c "import diffusers, transformers, safetensors, PIL, OpenEXR, scipy, cv2, pytest" 2>/dev/null; then
    echo "[gpu_check] installing neurender's dependencies into .venv"
    "$PY" -m pip install -q -e ".[test]"
  fi
else
  [ -x "$PY" ] || { echo "gpu_check --dry-run: no .venv here (scripts/setup_env.sh makes it); nothing installed" >&2; exit 2; }
fi
export PYTHONPATH="$PWD/backend${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$PY" scripts/gpu_check.py "$@"

#!/usr/bin/env bash
# Create (or refresh) the two environments neurender needs, idempotently:
#   .venv/          the backend (torch, diffusers, the `neurender` command)
#   .venv-blender/  Blender as a Python module (bpy 4.5 LTS, which pins numpy<2) for the add-on tests and the demo
# In production Blender runs its own bundled Python; this second environment plays that part here.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
BPY_VERSION=${NEURENDER_BPY_VERSION:-4.5.15}
# torch: the CPU build that lies on this machine's disk. A GPU user installs their CUDA build of torch into .venv
# first (see README); `pip install -e .` then keeps it because the range in pyproject.toml admits it.
TORCH_SPEC=${NEURENDER_TORCH_SPEC:-torch==2.13.0}

stamp() { sha256sum pyproject.toml scripts/setup_env.sh | sha256sum | cut -c1-16; }

if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.neurender-stamp 2>/dev/null)" != "$(stamp)" ]; then
  echo "[setup] backend environment .venv"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install -q "$TORCH_SPEC"
  fi
  .venv/bin/python -m pip install -q -e ".[test]"
  stamp > .venv/.neurender-stamp
fi

if [ "${NEURENDER_SKIP_BLENDER:-0}" != "1" ]; then
  if [ ! -x .venv-blender/bin/python ] || [ "$(cat .venv-blender/.neurender-stamp 2>/dev/null)" != "$(stamp)" ]; then
    echo "[setup] Blender environment .venv-blender (bpy $BPY_VERSION)"
    [ -x .venv-blender/bin/python ] || "$PY" -m venv .venv-blender
    .venv-blender/bin/python -m pip install -q --upgrade pip
    .venv-blender/bin/python -m pip install -q "bpy==$BPY_VERSION" "pytest>=8" "OpenEXR>=3.2"
    stamp > .venv-blender/.neurender-stamp
  fi
fi

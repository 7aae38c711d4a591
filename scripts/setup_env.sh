#!/usr/bin/env bash
# Create (or refresh) the two environments neurender needs, idempotently:
#   .venv/          the backend (torch, diffusers, the `neurender` command)
#   .venv-blender/  Blender as a Python module (bpy 4.5 LTS, which pins numpy<2) for the add-on tests and the demo
#   .venv-blender5/ the same with bpy 5.0 (NEURENDER_BLENDER5=1, the default; ~20 s and ~1 GB), so the add-on's
#                   Blender 5.0 code paths run too. NEURENDER_BLENDER5=0 skips it.
# In production Blender runs its own bundled Python; these environments play that part here.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
BPY_VERSION=${NEURENDER_BPY_VERSION:-4.5.15}
BPY5_VERSION=${NEURENDER_BPY5_VERSION:-5.0.1}
# torch: the CPU build that lies on this machine's disk. A GPU user installs their CUDA build of torch into .venv
# first (see README); `pip install -e .` then keeps it because the range in pyproject.toml admits it.
TORCH_SPEC=${NEURENDER_TORCH_SPEC:-torch==2.13.0}

stamp() { sha256sum pyproject.toml scripts/setup_env.sh | sha256sum | cut -c1-16; }

if [ "${NEURENDER_SKIP_BACKEND:-0}" = "1" ] && [ -x .venv/bin/python ]; then
  :  # an existing backend env is left as it is (NEURENDER_SKIP_BACKEND=1: only the Blender side is of interest)
elif [ ! -x .venv/bin/python ] || [ "$(cat .venv/.neurender-stamp 2>/dev/null)" != "$(stamp)" ]; then
  echo "[setup] backend environment .venv"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install -q "$TORCH_SPEC"
  fi
  .venv/bin/python -m pip install -q -e ".[test]"
  stamp > .venv/.neurender-stamp
fi

# A Blender environment depends only on its own package list, so editing this script does not reinstall it.
blender_env() {  # blender_env DIR BPY_VERSION
  local dir=$1 packages=("bpy==$2" "pytest>=8" "OpenEXR>=3.2") want
  want=$(echo "${packages[*]}" | sha256sum | cut -c1-16)
  if [ ! -x "$dir/bin/python" ] || [ "$(cat "$dir/.neurender-stamp" 2>/dev/null)" != "$want" ]; then
    echo "[setup] Blender environment $dir (bpy $2)"
    [ -x "$dir/bin/python" ] || "$PY" -m venv "$dir"
    "$dir/bin/python" -m pip install -q --upgrade pip
    "$dir/bin/python" -m pip install -q "${packages[@]}"
    echo "$want" > "$dir/.neurender-stamp"
  fi
}

if [ "${NEURENDER_SKIP_BLENDER:-0}" != "1" ]; then
  blender_env .venv-blender "$BPY_VERSION"
  if [ "${NEURENDER_BLENDER5:-1}" = "1" ]; then
    blender_env .venv-blender5 "$BPY5_VERSION"
  fi
fi

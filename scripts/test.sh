#!/usr/bin/env bash
# The test command: sets up the environments if needed, then runs the backend suite (.venv) and the Blender suite
# once per installed Blender environment (.venv-blender = bpy 4.5; .venv-blender5 = bpy 5.0 unless
# NEURENDER_BLENDER5=0), each with real bpy. Extra arguments go to every pytest run (e.g. -x, -k name). The whole
# suite runs by default, slow tier included (the SD 1.5-size smoke run, real-runner kill -9 tests, the local Ray
# cluster); NEURENDER_FAST=1 leaves the slow tier out while iterating. NEURENDER_SKIP_BACKEND=1 /
# NEURENDER_SKIP_BLENDER=1 leave a side out.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh || exit 1
report=$(mktemp -d)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DIFFUSERS_OFFLINE=1
marker=""; [ "${NEURENDER_FAST:-0}" = "1" ] && marker="not slow"
rb=0
if [ "${NEURENDER_SKIP_BACKEND:-0}" != "1" ]; then
  .venv/bin/python -m pytest tests/backend -q -m "$marker" --junitxml="$report/backend.xml" "$@"; rb=$?
fi
rbl=0
if [ "${NEURENDER_SKIP_BLENDER:-0}" != "1" ]; then
  envs=(.venv-blender)
  [ "${NEURENDER_BLENDER5:-1}" = "1" ] && [ -x .venv-blender5/bin/python ] && envs+=(.venv-blender5)
  for env in "${envs[@]}"; do
    echo "[test] Blender suite with $env ($("$env/bin/python" -c 'from importlib.metadata import version; print("bpy", version("bpy"))'))"
    "$env/bin/python" -m pytest tests/blender -q -m "$marker" --junitxml="$report/${env#.venv-}.xml" "$@" || rbl=1
  done
fi
.venv/bin/python scripts/summarize_junit.py "$report"/*.xml
rm -rf "$report"
# pytest exit 5 = no tests collected: that is a failure of the suite, not a pass.
[ $rb -eq 0 ] && [ $rbl -eq 0 ]

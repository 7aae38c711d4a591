#!/usr/bin/env bash
# The test command: sets up both environments if needed, then runs the backend suite (.venv) and the Blender suite
# (.venv-blender, real bpy). Extra arguments go to both pytest runs (e.g. -x, -k name). Slow real-size tests run
# only with NEURENDER_SLOW=1.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh || exit 1
report=$(mktemp -d)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DIFFUSERS_OFFLINE=1
marker="not slow"; [ "${NEURENDER_SLOW:-0}" = "1" ] && marker=""
.venv/bin/python -m pytest tests/backend -q -m "$marker" --junitxml="$report/backend.xml" "$@"; rb=$?
rbl=0
if [ "${NEURENDER_SKIP_BLENDER:-0}" != "1" ]; then
  .venv-blender/bin/python -m pytest tests/blender -q -m "$marker" --junitxml="$report/blender.xml" "$@"; rbl=$?
fi
.venv/bin/python scripts/summarize_junit.py "$report"/*.xml
rm -rf "$report"
# pytest exit 5 = no tests collected: that is a failure of the suite, not a pass.
[ $rb -eq 0 ] && [ $rbl -eq 0 ]

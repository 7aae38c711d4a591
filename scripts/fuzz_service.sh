#!/usr/bin/env bash
# Schemathesis against a live `neurender serve` with a valid pass folder under its root; prints the number of
# requests and of server errors (must be 0; exit 1 otherwise). Options: --quick, --examples N, --keep.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$here/backend${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-$here/.venv/bin/python}" "$here/scripts/fuzz_service.py" "$@"

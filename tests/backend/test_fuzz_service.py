"""scripts/fuzz_service.sh in its reduced mode (--quick: 5 examples per operation and generation mode, ~10 s): a live
server with a valid pass folder, schemathesis past validation (some jobs are created), no server error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_fuzz_service_quick_finds_no_server_error():
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO / "backend")}
    proc = subprocess.run([str(REPO / "scripts" / "fuzz_service.sh"), "--quick"], capture_output=True, text=True,
                          env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    assert summary["server_errors"] == 0 and summary["internal_errors_logged"] == 0
    assert summary["requests"] >= 50
    assert summary["statuses"].get("201", 0) > 0  # requests got past validation and created jobs

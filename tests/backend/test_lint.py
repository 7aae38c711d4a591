"""Static checks: pyflakes-level errors (undefined or unused names, syntax) anywhere in the project's Python."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_ruff_finds_no_errors():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.fail("ruff is part of the test extra; run scripts/setup_env.sh")
    proc = subprocess.run([ruff, "check", "--no-cache", "backend", "blender_addon", "scripts", "tests"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr

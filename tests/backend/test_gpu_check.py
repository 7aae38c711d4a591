"""``scripts/gpu_check.sh --dry-run``: the prepared GPU check, rehearsed on the CPU with the tiny model (CI).

The same script a CUDA machine runs (SD1.5 size, 16 frames 512x512, 20 steps, float16) runs here on 3 frames of
64x48 with 2 steps: every row of its table must come out with a number, the float16-vs-float32 line and the batch
size line too, and its final ``pytest -m gpu`` must collect the GPU tests and skip them (no CUDA). Without
``--dry-run`` on a machine whose nvidia-smi shows no GPU, it refuses at once and installs nothing.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROWS = ["diffusers per-frame ControlNet pipeline", "neurender off", "neurender first+prev", "neurender window",
        "neurender keyframes", "first+prev + deflicker at", "motion module", "first+prev --vae-slicing --cpu-offload"]


def _run(*args, timeout=240):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the script sets its own (this checkout's backend)
    return subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_dry_run_prints_every_row_and_runs_the_gpu_tests():
    proc = _run("--dry-run")
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "DRY RUN on the CPU" in out
    for row in ROWS:
        line = next((ln for ln in out.splitlines() if ln.startswith(row) and re.search(r"\d+\.\d{3}\s+\d+\.\d{2}", ln)),
                    None)
        assert line is not None, f"no timing row for {row!r}:\n{out}"
    assert re.search(r"float16 vs float32, first\+prev, 2 frames: latents relative L2 0\.0\d+", out), out
    assert "--batch-size 0 here:" in out
    assert "-m gpu" in out and re.search(r"\b4 skipped\b", out), out  # the GPU tests ran and skipped (no CUDA)


def test_without_a_gpu_the_real_check_refuses_and_installs_nothing(tmp_path):
    if subprocess.run("command -v nvidia-smi && nvidia-smi -L | grep -q '^GPU '", shell=True).returncode == 0:
        import pytest

        pytest.skip("this machine has a GPU")
    t0 = time.perf_counter()
    proc = _run()
    assert proc.returncode == 2 and "nothing installed" in proc.stderr
    assert time.perf_counter() - t0 < 10  # refused before any pip or model work

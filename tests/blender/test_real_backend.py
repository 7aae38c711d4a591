"""End to end against the real ``neurender serve`` (started by the add-on from the backend env) with a tiny
random-weight model: the README's demo command, shortened to 3 frames x 2 steps."""

import json
import os
import struct
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BACKEND_ENV = os.path.join(REPO, ".venv")


def _backend_available() -> bool:
    exe = os.path.join(BACKEND_ENV, "bin", "neurender")
    if not os.path.isfile(exe):
        return False
    return subprocess.run([exe, "serve", "--help"], capture_output=True, timeout=120).returncode == 0


@pytest.mark.skipif(not _backend_available(), reason="the backend env has no working 'neurender serve'")
def test_demo_end_to_end_with_real_backend(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HOME=str(tmp_path))
    proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "demo", "run_demo.py"), "--frames", "3",
                           "--steps", "2", "--samples", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=240, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("DEMO_RESULT ")]
    assert proc.returncode == 0 and lines, (proc.stdout + proc.stderr)[-4000:]
    r = json.loads(lines[-1][len("DEMO_RESULT "):])
    assert r["state"] == "done" and r["error"] == ""
    assert "protocol 1" in r["backend"]
    assert r["strip"]["start"] == 1 and r["strip"]["end"] == 3 and r["strip"]["elements"] == 3
    for f in (1, 2, 3):
        path = os.path.join(r["out_dir"], f"frame_{f:04d}.png")
        with open(path, "rb") as fh:
            head = fh.read(24)
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", head[16:24]) == (128, 96)  # the pass folder's resolution (multiple of 8)
    version = os.path.basename(r["out_dir"])  # frames/v001 <-> passes/v001
    assert version == "v001" and os.path.dirname(os.path.dirname(r["out_dir"])) == os.path.join(str(out), "shot")
    manifest = json.load(open(os.path.join(str(out), "shot", "passes", version, "manifest.json")))
    assert [e["frame"] for e in manifest["frames"]] == [1, 2, 3]
    assert os.path.isfile(r["blend"])
    # what the artist saw from the real backend: its random-weights flag (the tiny model is random) on the result,
    # the device Auto picked, the live preview image of the last step, the control images of frame 1
    assert r["random_weights"] is True and "RANDOM WEIGHTS" in r["message"]
    assert r["job_device"] == "cpu, float32" and r["progress"] == 1.0
    assert r["preview_step"] == 2 and r["preview_size"] and r["preview_size"][0] > 0
    assert r["controls"] == ["Neural Render depth"], r["controls"]
    # the add-on stopped the backend it started
    assert "stopping local backend" in proc.stdout + proc.stderr

"""Fault test: `python -m neurender.server` as a subprocess, kill -9 mid-job, restart on the same data folder.

Frames finished before the kill must be byte-identical afterwards, every frame must be a complete PNG, and the
job must complete. Once with the fake runner (fast), once with the real runner and a tiny random model.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, data_dir: Path, root: Path, env: dict[str, str], runner: str = "") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "neurender.server", "--port", str(self.port), "--data-dir", str(data_dir),
                "--root", str(root), "--device", "cpu", "--log-level", "warning"]
        if runner:
            args += ["--runner", runner]
        self.log = open(data_dir.parent / f"server-{self.port}.log", "wb")
        self.proc = subprocess.Popen(args, env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/version", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None, self.read_log()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)

    def read_log(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def job(url: str, job_id: str) -> dict:
    return httpx.get(f"{url}/jobs/{job_id}", timeout=5).json()


def wait_until(predicate, timeout: float, what: str, poll: float = 0.005):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


def finished_files(out_dir: Path) -> dict[str, bytes]:
    if not out_dir.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in sorted(out_dir.glob("frame_*.png"))}


def kill_mid_job_and_resume(
    tmp_path: Path, pass_dir: Path, settings: dict, env: dict[str, str], runner: str, frames_total: int,
    kill_when_denoising: bool = False, timeout: float = 120,
) -> tuple[dict, dict[str, bytes], dict[str, bytes]]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    out_dir = tmp_path / "out"
    server = ServerProcess(data_dir, tmp_path, env, runner)
    try:
        r = httpx.post(server.url + "/jobs", json={"pass_dir": str(pass_dir), "out_dir": str(out_dir),
                                                    "settings": settings}, timeout=10)
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        if kill_when_denoising:  # a kill during denoising: the runner resumes from its step checkpoint
            wait_until(lambda: job(server.url, job_id)["progress"]["step"] >= 2, timeout, "denoising", poll=0.05)
            server.kill9()
            server = ServerProcess(data_dir, tmp_path, env, runner)
        # watch the folder itself, so that the kill lands right after the first finished frame
        wait_until(lambda: finished_files(out_dir), timeout, "a finished frame", poll=0.002)
        server.kill9()
        before = finished_files(out_dir)
        assert 1 <= len(before) < frames_total, f"kill landed after {len(before)} frames"
        server = ServerProcess(data_dir, tmp_path, env, runner)
        state = wait_until(
            lambda: (j := job(server.url, job_id))["state"] in ("done", "failed", "cancelled") and j, timeout, "done",
            poll=0.05,
        )
        assert state["state"] == "done", (state, server.read_log())
        after = finished_files(out_dir)
        frame = httpx.get(f"{server.url}/jobs/{job_id}/frames/{state['frame_start']}", timeout=5)
        assert frame.status_code == 200 and frame.content == after[f"frame_{state['frame_start']:04d}.png"]
    finally:
        server.stop()
    return state, before, after


def check_nothing_lost(state: dict, before: dict[str, bytes], after: dict[str, bytes], frames_total: int, out: Path):
    assert len(after) == frames_total and len(state["frames_done"]) == frames_total
    for name, data in before.items():
        assert after[name] == data, f"{name} changed after the restart"
    for name in after:
        with Image.open(out / name) as im:
            im.load()  # a truncated or partial PNG would raise here


def test_kill9_mid_job_fake_runner(tmp_path):
    from neurender.server.fake_runner import STEP_SECONDS_ENV, write_fake_pass_folder

    pass_dir = write_fake_pass_folder(tmp_path / "shot", frames=6)
    env = {STEP_SECONDS_ENV: "0.03"}
    state, before, after = kill_mid_job_and_resume(
        tmp_path, pass_dir, {"steps": 5}, env, "neurender.server.fake_runner:run_fake_render", 6
    )
    check_nothing_lost(state, before, after, 6, tmp_path / "out")


@pytest.mark.slow
def test_kill9_mid_job_real_runner_tiny_model(tmp_path):
    """The real runner and a tiny random model: killed once while denoising, once after the first frame."""
    sys.path.insert(0, str(REPO / "tests" / "backend"))
    from support.synthetic_passes import write_synthetic_pass_folder

    from neurender.models.random_models import build_random_model

    model = build_random_model(tmp_path / "model", size="tiny", control_kinds=("depth",))
    pass_dir = tmp_path / "shot"
    frames = 8
    write_synthetic_pass_folder(pass_dir, frames=frames, width=64, height=48)
    settings = {
        "model": str(model.model),
        "controlnets": [{"kind": "depth", "model": str(model.controlnets["depth"])}],
        "steps": 6,
        "batch_size": 1,
        "seed": 3,
    }
    env = {"HF_HUB_OFFLINE": "1", "NEURENDER_CACHE": str(tmp_path / "cache")}
    state, before, after = kill_mid_job_and_resume(
        tmp_path, pass_dir, settings, env, "", frames, kill_when_denoising=True, timeout=300
    )
    check_nothing_lost(state, before, after, frames, tmp_path / "out")

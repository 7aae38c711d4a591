"""``neurender farm`` on a real local Ray cluster (head + a worker node on this machine, CPU, tiny model).

A chunk worker is killed with SIGKILL in the middle of its denoising loop; Ray re-executes the task, the chunk
resumes from its checkpoint, and the final frames equal a sequential in-process render byte for byte. All Ray
processes started here are stopped by their ids at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from neurender.contract import ControlNetUnit, RenderSettings
from support.synthetic_passes import write_synthetic_pass_folder

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.slow  # a Ray cluster takes ~25 s to start on 2 busy cores; the whole file ~60-90 s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log: Path, env: dict) -> subprocess.Popen:
    ray_cli = Path(sys.executable).with_name("ray")
    proc = subprocess.Popen([str(ray_cli), "start", "--block", "--disable-usage-stats", *args], stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while b"Ray runtime started" not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"ray start failed: {log.read_text()[-2000:]}")
        time.sleep(0.3)
    return proc


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM the `ray start --block` processes we started, then SIGKILL whatever of their process trees is left."""
    tree = []
    for proc in procs:
        try:
            root = psutil.Process(proc.pid)
            tree += [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    for proc in reversed(procs):  # worker node first, then the head
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=20)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    logs = tmp_path_factory.mktemp("ray-logs")
    temp_dir = tempfile.mkdtemp(prefix="nrray", dir="/tmp")  # short: Ray's unix socket paths must stay < 108 chars
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
           "NEURENDER_CACHE": str(tmp_path_factory.mktemp("nr-cache"))}
    procs = []
    try:
        common = ["--node-ip-address", "127.0.0.1", "--num-gpus", "0", "--object-store-memory", str(200 * 2**20)]
        procs.append(_start(["--head", "--port", str(port), "--num-cpus", "0", "--include-dashboard=false",
                             "--temp-dir", temp_dir, *common], logs / "head.log", env))
        procs.append(_start(["--address", f"127.0.0.1:{port}", "--num-cpus", "2", *common], logs / "worker.log", env))
        yield f"127.0.0.1:{port}"
    finally:
        _stop(procs)
        subprocess.run(["rm", "-rf", temp_dir], check=False)


def _chunk_workers() -> dict[int, str]:
    found = {}
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if cmd.startswith("ray::nr-chunk:"):
            found[p.info["pid"]] = cmd.split()[0]
    return found


def test_farm_retries_a_chunk_whose_worker_was_killed_and_matches_a_local_render(cluster, tiny_model_dir, tmp_path):
    from neurender.farm.anchors import compute_anchors
    from neurender.farm.chunks import render_chunk
    from neurender.farm.ray_farm import FarmOptions, Shot, run_farm
    from neurender.models.cache import PipelineCache

    passes = tmp_path / "shot"
    write_synthetic_pass_folder(passes, frames=8, width=64, height=48, motion=(2.0, 0.0))
    settings = RenderSettings(prompt="a wooden toy", steps=12, model=str(tiny_model_dir.model), batch_size=4,
                              consistency="first+prev",
                              controlnets=[ControlNetUnit(kind="depth", model=str(tiny_model_dir.controlnets["depth"]))])
    out = tmp_path / "farm"
    killed: dict = {}

    def killer():  # kill one chunk worker as soon as a chunk has checkpointed a step (mid-chunk)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for state in (out / ".chunks").glob("*/.neurender/state.pt"):
                workers = _chunk_workers()
                chunk = state.parent.parent.name  # e.g. 0001-0004
                for pid, title in workers.items():
                    if title.endswith(f"{int(chunk[:4])}-{int(chunk[5:])}"):
                        os.kill(pid, signal.SIGKILL)
                        killed.update(pid=pid, title=title, chunk=chunk)
                        return
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    events = []
    report = run_farm([Shot(pass_dir=passes, out_dir=out, settings=settings, anchor_count=2)],
                      FarmOptions(address=cluster, chunk_size=4, overlap=1, gpus_per_task=0, cpus_per_task=1,
                                  max_retries=2),
                      events=events.append)
    thread.join(timeout=1)
    assert killed, "no chunk worker was caught mid-chunk"
    assert not psutil.pid_exists(killed["pid"]) or psutil.Process(killed["pid"]).status() == psutil.STATUS_ZOMBIE
    assert report.ok, report.failures
    done = {d["chunk"]: d for d in report.chunks_done}
    assert sorted(done) == ["1-4", "5-8"]
    retried = done[f"{int(killed['chunk'][:4])}-{int(killed['chunk'][5:])}"]
    assert retried["pid"] != killed["pid"]  # finished by another worker process
    assert [e["event"] for e in events].count("chunk_done") == 2 and events[-1]["event"] == "shot_done"
    json.dumps(events)  # machine-readable as they are
    final = {p.name: p.read_bytes() for p in out.glob("frame_*.png")}
    assert sorted(final) == [f"frame_{f:04d}.png" for f in range(1, 9)]

    # the same chunks rendered here, one after the other, give the same bytes (deterministic on any node)
    local = tmp_path / "local"
    cache = PipelineCache()
    anchors = compute_anchors(passes, local / "anchors", settings, count=2, pipelines=cache)
    assert anchors.digest == json.loads((out / "anchors" / "anchors.json").read_text())["digest"]
    for core in ("1-4", "5-8"):
        render_chunk(passes, local, dataclasses.replace(settings, frames=core), overlap=1, anchors=anchors.folder,
                     pipelines=cache)
    assert {p.name: p.read_bytes() for p in local.glob("frame_*.png")} == final


def test_farm_reports_bad_input_before_submitting_anything(cluster, tmp_path):
    from neurender.cli import main

    assert main(["farm", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--ray-address", cluster]) == 2
    write_synthetic_pass_folder(tmp_path / "shot", frames=4, width=16, height=16, motion=(1.0, 0.0))
    assert main(["farm", str(tmp_path / "shot"), "--out", str(tmp_path / "o"), "--ray-address", cluster,
                 "--chunk-size", "2", "--overlap", "2"]) == 2  # chunks too short for their overlaps
    assert not (tmp_path / "o").exists()

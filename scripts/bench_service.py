#!/usr/bin/env python
"""Benchmark of `neurender serve`: status-polling requests/s, and the latency the service adds per job compared
with calling the job runner directly. The server runs as a subprocess (`python -m neurender.server`) on a free
loopback port, so client and server do not share a GIL.

    .venv/bin/python scripts/bench_service.py                 # fake runner (HTTP layer only), quick
    .venv/bin/python scripts/bench_service.py --runner real   # real runner, tiny random model (slow on CPU)
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data: Path, root: Path, runner: str, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    args = [sys.executable, "-m", "neurender.server", "--port", str(port), "--data-dir", str(data), "--root",
            str(root), "--device", "cpu", "--log-level", "error"]
    if runner:
        args += ["--runner", runner]
    proc = subprocess.Popen(args, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/version", timeout=1)
            return proc, url
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the server did not start")


def poll_rate(url: str, job_id: str, seconds: float, clients: int) -> float:
    counts = [0] * clients

    def worker(i: int) -> None:
        with httpx.Client(base_url=url) as c:
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                r = c.get(f"/jobs/{job_id}")
                assert r.status_code == 200
                counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runner", choices=("fake", "real"), default="fake")
    ap.add_argument("--jobs", type=int, default=5, help="jobs timed each way")
    ap.add_argument("--frames", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--poll-seconds", type=float, default=3.0)
    ap.add_argument("--poll-interval", type=float, default=0.005, help="client polling interval for job latency")
    args = ap.parse_args()

    from neurender.contract import RenderSettings
    from neurender.runner import JobSpec

    tmp = Path(tempfile.mkdtemp(prefix="neurender-bench-"))
    env = {"HF_HUB_OFFLINE": "1", "NEURENDER_CACHE": str(tmp / "cache")}
    settings: dict = {"steps": args.steps, "batch_size": 1}
    if args.runner == "fake":
        from neurender.server.fake_runner import STEP_SECONDS_ENV, run_fake_render, write_fake_pass_folder

        env[STEP_SECONDS_ENV] = "0"
        os.environ[STEP_SECONDS_ENV] = "0"
        write_fake_pass_folder(tmp / "shot", frames=args.frames)
        runner, runner_arg = run_fake_render, "neurender.server.fake_runner:run_fake_render"
        cache = None
    else:
        sys.path.insert(0, str(REPO / "tests" / "backend"))
        from support.synthetic_passes import write_synthetic_pass_folder

        from neurender.models.cache import PipelineCache
        from neurender.models.random_models import build_random_model
        from neurender.runner import run_render

        model = build_random_model(tmp / "model", size="tiny", control_kinds=("depth",))
        write_synthetic_pass_folder(tmp / "shot", frames=args.frames, width=64, height=48)
        settings.update(model=str(model.model),
                        controlnets=[{"kind": "depth", "model": str(model.controlnets["depth"])}])
        runner, runner_arg, cache = run_render, "", PipelineCache()

    proc, url = start_server(tmp / "data", tmp, runner_arg, env)
    try:
        # Direct call and service call alternate, so that a change in machine load hits both alike; the first
        # pair is a warm-up (the real runner loads its model once on each side).
        direct, served = [], []
        with httpx.Client(base_url=url, timeout=600) as c:
            job_id = ""
            for i in range(args.jobs + 1):
                spec = JobSpec(tmp / "shot", tmp / f"direct{i}", RenderSettings.from_dict(settings))
                t0 = time.perf_counter()
                runner(spec, pipelines=cache)
                t_direct = time.perf_counter() - t0
                # the same job through the service: submit, poll until done, download every frame
                t0 = time.perf_counter()
                r = c.post("/jobs", json={"pass_dir": str(tmp / "shot"), "settings": settings})
                assert r.status_code == 201, r.text
                job_id = r.json()["id"]
                while (job := c.get(f"/jobs/{job_id}").json())["state"] not in ("done", "failed", "cancelled"):
                    time.sleep(args.poll_interval)
                assert job["state"] == "done", job
                for f in job["frames_done"]:
                    assert c.get(f"/jobs/{job_id}/frames/{f}").status_code == 200
                if i:
                    direct.append(t_direct)
                    served.append(time.perf_counter() - t0)
        one = poll_rate(url, job_id, args.poll_seconds, 1)
        two = poll_rate(url, job_id, args.poll_seconds, 4)
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)

    d, s = statistics.median(direct), statistics.median(served)
    added = statistics.median(b - a for a, b in zip(direct, served))
    print(f"runner: {args.runner}, {args.jobs} jobs of {args.frames} frames x {args.steps} steps, "
          f"client poll interval {args.poll_interval * 1000:.0f} ms, {os.cpu_count()} CPU cores")
    print(f"{'':34s}{'direct runner':>16s}{'via HTTP service':>20s}")
    print("(via HTTP = submit + poll until done + download every frame)")
    print(f"{'job latency, median (ms)':34s}{d * 1000:16.1f}{s * 1000:20.1f}")
    print(f"{'job latency, min (ms)':34s}{min(direct) * 1000:16.1f}{min(served) * 1000:20.1f}")
    print(f"{'added latency per job, median (ms)':34s}{'':16s}{added * 1000:20.1f}")
    print(f"{'GET /jobs/{id} req/s, 1 client':34s}{'':16s}{one:20.0f}")
    print(f"{'GET /jobs/{id} req/s, 4 clients':34s}{'':16s}{two:20.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

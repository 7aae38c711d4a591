"""`neurender serve` over real HTTP on 127.0.0.1 with the fake runner (no model): submit, poll, fetch frames,
cancel, two concurrent clients, restart with the same database, SSE, free models, validation errors."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from neurender.server.app import create_app
from neurender.server.config import ServerConfig
from neurender.server.fake_runner import STEP_SECONDS_ENV, run_fake_render, write_fake_pass_folder
from neurender.server.live import LiveServer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class FakePipelines:
    def __init__(self) -> None:
        self.freed = 0

    def describe(self) -> dict:
        return {"loaded": ["tiny"], "freed": self.freed}

    def free(self) -> None:
        self.freed += 1

    def get(self, *args, **kwargs):  # pragma: no cover - the fake runner never loads models
        raise AssertionError("not used")


class CountingRunner:
    """Wraps the fake runner and records how many jobs ran at the same time."""

    def __init__(self) -> None:
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()
        self.calls = 0

    def __call__(self, spec, **kw):
        with self.lock:
            self.active += 1
            self.calls += 1
            self.max_active = max(self.max_active, self.active)
        try:
            return run_fake_render(spec, **kw)
        finally:
            with self.lock:
                self.active -= 1


def make_config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(data_dir=tmp_path / "data", roots=[tmp_path], device="cpu", progress_interval=0.02)


def wait_for(client: httpx.Client, job_id: str, states, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, f"job stuck in {job['state']}: {job}"
        time.sleep(0.02)


@pytest.fixture()
def step_seconds(monkeypatch):
    def set_(seconds: float) -> None:
        monkeypatch.setenv(STEP_SECONDS_ENV, str(seconds))

    set_(0.002)
    return set_


def test_submit_poll_fetch_frames(tmp_path, step_seconds):
    passes = write_fake_pass_folder(tmp_path / "shot", frames=3, width=40, height=24, start=10)
    pipelines = FakePipelines()
    app = create_app(make_config(tmp_path), runner=run_fake_render, pipelines=pipelines)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        version = client.get("/version").json()
        assert version["protocol_version"] == 1 and version["token_required"] is False
        assert version["models"] == {"loaded": ["tiny"], "freed": 0}

        r = client.post("/jobs", json={"pass_dir": str(passes), "settings": {"steps": 3, "seed": 5}})
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["state"] in ("queued", "running") and job["frame_start"] == 10 and job["frame_end"] == 12
        assert job["settings"]["steps"] == 3 and job["settings"]["seed"] == 5
        done = wait_for(client, job["id"], ("done", "failed"))
        assert done["state"] == "done", done
        assert done["frames_done"] == [10, 11, 12]
        assert done["progress"]["frames_done"] == 3 and done["progress"]["frames_total"] == 3
        out_dir = Path(done["out_dir"])
        assert out_dir.is_relative_to((tmp_path / "data").resolve())
        for frame in (10, 11, 12):
            r = client.get(f"/jobs/{job['id']}/frames/{frame}")
            assert r.status_code == 200 and r.headers["content-type"] == "image/png"
            assert r.content.startswith(PNG_MAGIC)
            assert r.content == (out_dir / f"frame_{frame:04d}.png").read_bytes()
        # 40x24 (already multiples of 8): width/height in the IHDR chunk
        assert int.from_bytes(r.content[16:20], "big") == 40 and int.from_bytes(r.content[20:24], "big") == 24
        assert client.get(f"/jobs/{job['id']}/frames/13").status_code == 404
        assert "outside" in client.get(f"/jobs/{job['id']}/frames/9").json()["detail"]
        assert client.get("/jobs/nope").status_code == 404

        r2 = client.post("/jobs", json={"pass_dir": str(passes), "settings": {"steps": 1}})
        wait_for(client, r2.json()["id"], ("done",))
        listed = [j["id"] for j in client.get("/jobs").json()["jobs"]]
        assert listed == [r2.json()["id"], job["id"]]  # newest first

        assert client.post("/models/free").json()["freed"] is True
        assert pipelines.freed == 1


def test_submit_with_out_dir_skips_finished_frames(tmp_path, step_seconds):
    passes = write_fake_pass_folder(tmp_path / "shot", frames=3)
    out = tmp_path / "renders" / "a"
    out.mkdir(parents=True)
    (out / "frame_0002.png").write_bytes(b"kept")
    runner = CountingRunner()
    app = create_app(make_config(tmp_path), runner=runner)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        r = client.post("/jobs", json={"pass_dir": str(passes), "out_dir": str(out), "settings": {"steps": 1}})
        assert r.status_code == 201, r.text
        assert r.json()["frames_done"] == [2]
        done = wait_for(client, r.json()["id"], ("done",))
        assert done["frames_done"] == [1, 2, 3]
        assert (out / "frame_0002.png").read_bytes() == b"kept"


def test_cancel_running_and_queued(tmp_path, step_seconds):
    step_seconds(0.02)
    passes = write_fake_pass_folder(tmp_path / "shot", frames=4)
    app = create_app(make_config(tmp_path), runner=run_fake_render)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        first = client.post("/jobs", json={"pass_dir": str(passes), "settings": {"steps": 10}}).json()
        second = client.post("/jobs", json={"pass_dir": str(passes), "settings": {"steps": 10}}).json()
        deadline = time.monotonic() + 10
        while True:  # wait until the first job has finished at least one frame
            job = client.get(f"/jobs/{first['id']}").json()
            if job["frames_done"]:
                break
            assert time.monotonic() < deadline
            time.sleep(0.02)
        queued = client.delete(f"/jobs/{second['id']}").json()
        assert queued["state"] == "cancelled"  # at once
        t0 = time.monotonic()
        r = client.delete(f"/jobs/{first['id']}")
        assert r.status_code == 200 and r.json()["state"] in ("running", "cancelled")
        cancelled = wait_for(client, first["id"], ("cancelled", "done", "failed"), timeout=5)
        elapsed = time.monotonic() - t0
        assert cancelled["state"] == "cancelled"
        assert elapsed < 1.0, elapsed  # stopped at the next step (0.02 s), not at the end of the job (0.8 s)
        assert 1 <= len(cancelled["frames_done"]) < 4
        for frame in cancelled["frames_done"]:  # finished frames stay
            assert client.get(f"/jobs/{first['id']}/frames/{frame}").status_code == 200
        # cancelling a final job is idempotent; the second job never ran
        assert client.delete(f"/jobs/{first['id']}").json()["state"] == "cancelled"
        assert client.get(f"/jobs/{second['id']}").json()["frames_done"] == []


def test_two_concurrent_clients_one_worker(tmp_path, step_seconds):
    step_seconds(0.005)
    shots = [write_fake_pass_folder(tmp_path / f"shot{i}", frames=2) for i in range(2)]
    runner = CountingRunner()
    app = create_app(make_config(tmp_path), runner=runner)
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def client_thread(index: int, url: str) -> None:
        try:
            with httpx.Client(base_url=url, timeout=10) as client:
                ids = []
                for seed in range(2):
                    r = client.post(
                        "/jobs", json={"pass_dir": str(shots[index]), "settings": {"steps": 3, "seed": seed}}
                    )
                    assert r.status_code == 201, r.text
                    ids.append(r.json()["id"])
                for job_id in ids:
                    assert wait_for(client, job_id, ("done", "failed"))["state"] == "done"
                results[index] = ids
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    with LiveServer(app) as server:
        threads = [threading.Thread(target=client_thread, args=(i, server.url)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        with httpx.Client(base_url=server.url) as client:
            jobs = {j["id"]: j for j in client.get("/jobs").json()["jobs"]}
    assert runner.calls == 4 and runner.max_active == 1  # one GPU worker
    all_ids = results[0] + results[1]
    assert len(set(all_ids)) == 4
    assert len({jobs[i]["out_dir"] for i in all_ids}) == 4
    # different seeds give different frames
    a, b = (Path(jobs[i]["out_dir"]) / "frame_0001.png" for i in results[0])
    assert a.read_bytes() != b.read_bytes()


def test_restart_with_the_same_database(tmp_path, step_seconds):
    step_seconds(0.02)
    passes = write_fake_pass_folder(tmp_path / "shot", frames=4)
    config = make_config(tmp_path)
    with LiveServer(create_app(config, runner=run_fake_render)) as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            quick = client.post("/jobs", json={"pass_dir": str(passes), "settings": {"steps": 1}}).json()
            wait_for(client, quick["id"], ("done",))
            long = client.post("/jobs", json={"pass_dir": str(passes), "settings": {"steps": 10}}).json()
            deadline = time.monotonic() + 10
            while not client.get(f"/jobs/{long['id']}").json()["frames_done"]:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            before = client.get(f"/jobs/{long['id']}").json()
    # graceful stop mid-job: the job goes back to the queue, its finished frames stay
    out_dir = Path(before["out_dir"])
    kept = {f: (out_dir / f"frame_{f:04d}.png").read_bytes() for f in before["frames_done"]}
    assert 1 <= len(kept) < 4
    runner = CountingRunner()
    with LiveServer(create_app(config, runner=runner)) as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            old = client.get(f"/jobs/{quick['id']}").json()
            assert old["state"] == "done" and old["frames_done"] == [1, 2, 3, 4]
            assert old["settings"]["steps"] == 1
            resumed = wait_for(client, long["id"], ("done", "failed", "cancelled"))
    assert resumed["state"] == "done" and resumed["frames_done"] == [1, 2, 3, 4]
    assert runner.calls == 1
    for frame, data in kept.items():
        assert (out_dir / f"frame_{frame:04d}.png").read_bytes() == data


def test_events_stream_until_done(tmp_path, step_seconds):
    passes = write_fake_pass_folder(tmp_path / "shot", frames=2)
    config = make_config(tmp_path)
    config.sse_poll_seconds = 0.01
    app = create_app(config, runner=run_fake_render)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        job = client.post("/jobs", json={"pass_dir": str(passes), "settings": {"steps": 5}}).json()
        snapshots = []
        with client.stream("GET", f"/jobs/{job['id']}/events") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("data: "):
                    snapshots.append(json.loads(line[6:]))
        assert snapshots and snapshots[-1]["state"] == "done"
        assert snapshots[-1]["frames_done"] == [1, 2]
        steps = [s["progress"]["step"] for s in snapshots]
        assert steps == sorted(steps)  # progress never goes backwards


def test_invalid_requests_get_4xx_with_a_reason(tmp_path, step_seconds):
    passes = write_fake_pass_folder(tmp_path / "shot", frames=2)
    app = create_app(make_config(tmp_path), runner=run_fake_render)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        cases = [
            ({"pass_dir": str(passes), "settings": {"steps": 0}}, 422, "steps"),
            ({"pass_dir": str(passes), "settings": {"steps": 10_000}}, 422, "steps"),
            ({"pass_dir": str(passes), "settings": {"width": 4096}}, 422, "width"),
            ({"pass_dir": str(passes), "settings": {"bogus": 1}}, 422, "unknown settings: bogus"),
            ({"pass_dir": str(passes), "settings": {"seed": "x"}}, 422, "seed"),
            ({"pass_dir": str(passes), "settings": {"frames": "50-60"}}, 422, "lie outside the shot"),
            ({"settings": {}}, 422, "pass_dir"),
            ({"pass_dir": str(tmp_path / "missing")}, 422, "does not exist"),
            ({"pass_dir": str(tmp_path)}, 422, "manifest.json"),
            ({"pass_dir": "relative/dir"}, 400, "absolute"),
        ]
        for body, status, reason in cases:
            r = client.post("/jobs", json=body)
            assert r.status_code == status, (body, r.text)
            assert reason in r.json()["detail"], (body, r.text)
        r = client.post("/jobs", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422 and isinstance(r.json()["detail"], str)
        big = write_fake_pass_folder(tmp_path / "big", frames=1, width=4000, height=64)
        r = client.post("/jobs", json={"pass_dir": str(big)})
        assert r.status_code == 422 and "exceeds 2048" in r.json()["detail"]
        assert client.get("/jobs").json()["jobs"] == []  # nothing was queued


def test_runner_failures_are_recorded_and_the_worker_goes_on(tmp_path, step_seconds):
    from neurender.errors import ModelLoadError

    passes = write_fake_pass_folder(tmp_path / "shot", frames=1)
    failures = iter([ModelLoadError("model /m/x.safetensors is not an SD 1.5 checkpoint"), RuntimeError("boom")])

    def runner(spec, **kw):
        exc = next(failures, None)
        if exc is not None:
            raise exc
        return run_fake_render(spec, **kw)

    app = create_app(make_config(tmp_path), runner=runner)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        ids = [client.post("/jobs", json={"pass_dir": str(passes), "settings": {"steps": 1}}).json()["id"]
               for _ in range(3)]
        jobs = [wait_for(client, i, ("done", "failed", "cancelled")) for i in ids]
    assert [j["state"] for j in jobs] == ["failed", "failed", "done"]
    assert jobs[0]["error"] == "model /m/x.safetensors is not an SD 1.5 checkpoint"
    assert jobs[1]["error"] == "internal error: RuntimeError: boom"
    assert jobs[2]["error"] is None and jobs[2]["frames_done"] == [1]


def test_busy_out_dir_and_full_queue_are_refused(tmp_path, step_seconds):
    step_seconds(0.02)
    passes = write_fake_pass_folder(tmp_path / "shot", frames=2)
    config = make_config(tmp_path)
    config.max_queued_jobs = 2
    app = create_app(config, runner=run_fake_render)
    out = str(tmp_path / "out")
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        first = client.post("/jobs", json={"pass_dir": str(passes), "out_dir": out, "settings": {"steps": 20}})
        assert first.status_code == 201
        again = client.post("/jobs", json={"pass_dir": str(passes), "out_dir": out, "settings": {"steps": 20}})
        assert again.status_code == 409 and first.json()["id"] in again.json()["detail"]
        assert client.post("/jobs", json={"pass_dir": str(passes), "settings": {"steps": 20}}).status_code == 201
        full = client.post("/jobs", json={"pass_dir": str(passes), "settings": {"steps": 1}})
        assert full.status_code == 429 and "queue is full" in full.json()["detail"]
        client.delete(f"/jobs/{first.json()['id']}")
        wait_for(client, first.json()["id"], ("cancelled",))
        # the folder is free again once its job is final
        assert client.post("/jobs", json={"pass_dir": str(passes), "out_dir": out, "settings": {"steps": 1}}).status_code == 201

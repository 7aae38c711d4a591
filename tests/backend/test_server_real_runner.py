"""`neurender serve` over real HTTP with the real job runner and a tiny random model: submit, poll, fetch frames
(identical to calling the runner directly), models kept loaded between jobs, cancel mid-denoise, free models."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from neurender.contract import RenderSettings
from neurender.models.cache import PipelineCache
from neurender.runner import JobSpec, run_render
from neurender.server.app import create_app
from neurender.server.config import ServerConfig
from neurender.server.live import LiveServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support.synthetic_passes import write_synthetic_pass_folder  # noqa: E402


def wait_for(client: httpx.Client, job_id: str, states, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while (job := client.get(f"/jobs/{job_id}").json())["state"] not in states:
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return job


@pytest.mark.slow
def test_real_runner_over_http(tmp_path, monkeypatch):
    from neurender.models.random_models import build_random_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("NEURENDER_CACHE", str(tmp_path / "cache"))
    model = build_random_model(tmp_path / "model", size="tiny", control_kinds=("depth",))
    write_synthetic_pass_folder(tmp_path / "shot", frames=2, width=64, height=48)
    settings = {
        "model": str(model.model),
        "controlnets": [{"kind": "depth", "model": str(model.controlnets["depth"])}],
        "steps": 2,
        "seed": 11,
    }
    cache = PipelineCache()
    config = ServerConfig(data_dir=tmp_path / "data", roots=[tmp_path], device="cpu")
    app = create_app(config, pipelines=cache)  # default runner: neurender.runner.run_render
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        r = client.post("/jobs", json={"pass_dir": str(tmp_path / "shot"), "settings": settings})
        assert r.status_code == 201, r.text
        # a second client queues a long job (to cancel) while the first one runs
        with httpx.Client(base_url=server.url, timeout=30) as other:
            long = other.post(
                "/jobs", json={"pass_dir": str(tmp_path / "shot"), "settings": {**settings, "steps": 150}}
            ).json()
        done = wait_for(client, r.json()["id"], ("done", "failed", "cancelled"))
        assert done["state"] == "done", done
        assert done["frames_done"] == [1, 2] and done["progress"]["steps_total"] == 2
        served = {}
        for f in (1, 2):
            png = client.get(f"/jobs/{done['id']}/frames/{f}")
            assert png.status_code == 200
            with Image.open(io.BytesIO(png.content)) as im:
                assert im.size == (64, 48)
            served[f] = png.content

        # cancel the long job once it is denoising; it stops at its next step
        deadline = time.monotonic() + 180
        while (job := client.get(f"/jobs/{long['id']}").json())["progress"]["step"] < 1:
            assert job["state"] in ("queued", "running") and time.monotonic() < deadline, job
            time.sleep(0.05)
        assert cache.loads == 1  # same model selection: not loaded again for the second job
        assert client.get("/version").json()["models"]["loaded"] is True
        client.delete(f"/jobs/{long['id']}")
        cancelled = wait_for(client, long["id"], ("done", "failed", "cancelled"), timeout=60)
        assert cancelled["state"] == "cancelled" and cancelled["progress"]["step"] < 150

        assert client.post("/models/free").json()["freed"] is True
        assert client.get("/version").json()["models"] == {"loaded": False}

    # the service adds nothing to the pixels: the runner called directly writes the same files
    direct = tmp_path / "direct"
    run_render(JobSpec(tmp_path / "shot", direct, RenderSettings.from_dict(settings)), pipelines=PipelineCache())
    for f, data in served.items():
        assert (direct / f"frame_{f:04d}.png").read_bytes() == data

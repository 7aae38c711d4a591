"""Live previews: the latent-to-RGB projection, the runner publishing one per step, and the preview route."""

from __future__ import annotations

import io
import time

import httpx
import numpy as np
import torch
from PIL import Image

from neurender.contract import PREVIEW_HEADER, ROUTE_JOB_PREVIEW, ControlNetUnit, RenderSettings
from neurender.engine.preview import SD15_LATENT_RGB, contact_sheet, latents_to_rgb
from neurender.runner import STATE_DIR, JobSpec, run_render
from neurender.server.app import create_app
from neurender.server.config import ServerConfig
from neurender.server.fake_runner import STEP_SECONDS_ENV, run_fake_render, write_fake_pass_folder
from neurender.server.live import LiveServer
from support.synthetic_passes import write_synthetic_pass_folder


def test_projection_is_the_linear_sd15_approximation():
    latents = torch.zeros(2, 4, 3, 5)
    latents[0, :, 1, 2] = torch.tensor([1.0, -0.5, 0.25, 0.5])
    rgb = latents_to_rgb(latents)
    assert rgb.shape == (2, 3, 5, 3) and rgb.dtype == np.uint8
    expected = (np.clip((np.array([1.0, -0.5, 0.25, 0.5]) @ SD15_LATENT_RGB + 1) / 2, 0, 1) * 255 + 0.5).astype(np.uint8)
    assert rgb[0, 1, 2].tolist() == expected.tolist()
    assert rgb[1, 0, 0].tolist() == [128, 128, 128]  # a zero latent is mid grey
    # a latent that decodes to red under the approximation looks red
    red = torch.from_numpy(np.linalg.pinv(SD15_LATENT_RGB.T) @ np.array([0.9, -0.9, -0.9], np.float32))
    assert latents_to_rgb(red.reshape(1, 4, 1, 1).float())[0, 0, 0].argmax() == 0


def test_contact_sheet_tiles_and_spreads_frames():
    frames = np.stack([np.full((4, 6, 3), i, np.uint8) for i in range(40)])
    sheet = contact_sheet(frames, max_frames=8, columns=4, gap=1)
    assert sheet.shape == (2 * 4 + 1, 4 * 6 + 3, 3)
    assert sheet[0, 0, 0] == 0 and sheet[-1, -1, 0] == 39  # first and last frame of the shot are shown
    assert contact_sheet(frames[:1]).shape == (4, 6, 3)


def test_runner_publishes_a_changing_preview_every_step(tiny_model_dir, tmp_path):
    passes = tmp_path / "passes"
    write_synthetic_pass_folder(passes, frames=3, width=64, height=48)
    settings = RenderSettings(model=str(tiny_model_dir.model), steps=4, batch_size=3, device="auto", dtype="auto",
                              controlnets=[ControlNetUnit(kind="depth", model=str(tiny_model_dir.controlnets["depth"]))])
    out = tmp_path / "out"
    previews, seen = {}, []

    def on_progress(p):
        seen.append(p)
        if p.preview_step and p.preview_step not in previews:
            previews[p.preview_step] = (out / STATE_DIR / "preview.png").read_bytes()
            assert p.frames_done == 0 and not list(out.glob("frame_*.png"))  # previews come before any frame

    run_render(JobSpec(passes, out, settings), progress=on_progress)
    assert sorted(previews) == [1, 2, 3, 4]
    assert len(set(previews.values())) == 4  # the predicted frames change from step to step
    with Image.open(io.BytesIO(previews[4])) as im:
        assert im.size == (3 * (64 // 8) * 2 + 2 * 2, 48 // 8 * 2)  # three frames side by side, 2x the latent size
    # auto resolved to what this machine has, and reported
    loaded = [p for p in seen if p.device]
    assert loaded and loaded[-1].device == "cpu" and loaded[-1].dtype == "float32"
    assert seen[-1].random_weights is True  # the tiny model is random: the progress says so


def test_preview_route_serves_the_latest_preview(tmp_path, monkeypatch):
    monkeypatch.setenv(STEP_SECONDS_ENV, "0.05")
    passes = write_fake_pass_folder(tmp_path / "shot", frames=2)
    config = ServerConfig(data_dir=tmp_path / "data", roots=[tmp_path], device="cpu", progress_interval=0.0)
    app = create_app(config, runner=run_fake_render)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get(ROUTE_JOB_PREVIEW.format(job_id="nope")).status_code == 404
        job = client.post("/jobs", json={"pass_dir": str(passes), "settings": {"steps": 10}}).json()
        route = ROUTE_JOB_PREVIEW.format(job_id=job["id"])
        seen: dict[int, bytes] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            r = client.get(route)
            if r.status_code == 200:
                assert r.headers["content-type"] == "image/png"
                seen[int(r.headers[PREVIEW_HEADER])] = r.content
            else:
                assert r.status_code == 404 and "no preview yet" in r.json()["detail"]
            if client.get(f"/jobs/{job['id']}").json()["state"] == "done":
                break
            time.sleep(0.03)
        assert len(seen) >= 3 and len(set(seen.values())) >= 3, sorted(seen)  # it changes while the job runs
        final = client.get(f"/jobs/{job['id']}").json()
        assert final["progress"]["preview_step"] == 20


def test_served_jobs_write_the_control_images_the_addon_shows(tmp_path, monkeypatch):
    """``neurender serve`` asks the runner for the control images (the CLI's --save-controls) inside the job's
    output folder, at CONTROLS_DIR with CONTROL_FILE_PATTERN: the add-on's "Show Control Images" reads them there."""
    from neurender.contract import CONTROL_FILE_PATTERN, CONTROLS_DIR, ROUTE_JOB_CONTROL

    monkeypatch.setenv(STEP_SECONDS_ENV, "0.0")
    passes = write_fake_pass_folder(tmp_path / "shot", frames=2)
    specs = []

    def runner(spec, **kw):
        specs.append(spec)
        return run_fake_render(spec, **kw)

    config = ServerConfig(data_dir=tmp_path / "data", roots=[tmp_path], device="cpu", progress_interval=0.0)
    app = create_app(config, runner=runner)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        job = client.post("/jobs", json={"pass_dir": str(passes), "settings": {"steps": 2}}).json()
        deadline = time.monotonic() + 20
        while client.get(f"/jobs/{job['id']}").json()["state"] not in ("done", "failed") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert specs and specs[0].save_controls is not None
        assert specs[0].save_controls == specs[0].out_dir / CONTROLS_DIR
        route = ROUTE_JOB_CONTROL.format(job_id=job["id"], kind="depth", frame=1)
        answer = client.get(route)  # the fake runner derives none
        assert answer.status_code == 404 and answer.json()["error_kind"] == "not_found"
        # what the real runner writes there is served to a client on another computer (the add-on's upload mode)
        folder = specs[0].save_controls
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 6), (200, 10, 10)).save(folder / CONTROL_FILE_PATTERN.format(kind="depth", frame=1))
        answer = client.get(route)
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(answer.content)) as im:
            assert im.size == (8, 6)
        for bad in (ROUTE_JOB_CONTROL.format(job_id=job["id"], kind="albedo", frame=1),
                    ROUTE_JOB_CONTROL.format(job_id=job["id"], kind="depth", frame=2),
                    ROUTE_JOB_CONTROL.format(job_id="nope", kind="depth", frame=1)):
            assert client.get(bad).status_code == 404, bad
    assert CONTROL_FILE_PATTERN.format(kind="depth", frame=3) == "depth_0003.png"


def test_runner_writes_control_images_where_asked(tiny_model_dir, tmp_path):
    from neurender.contract import CONTROL_FILE_PATTERN, CONTROLS_DIR

    passes = tmp_path / "passes"
    write_synthetic_pass_folder(passes, frames=2, width=32, height=32)
    out = tmp_path / "out"
    settings = RenderSettings(model=str(tiny_model_dir.model), steps=1, device="cpu",
                              controlnets=[ControlNetUnit(kind="depth", model=str(tiny_model_dir.controlnets["depth"]))])
    run_render(JobSpec(pass_dir=passes, out_dir=out, settings=settings, save_controls=out / CONTROLS_DIR))
    for frame in (1, 2):
        path = out / CONTROLS_DIR / CONTROL_FILE_PATTERN.format(kind="depth", frame=frame)
        with Image.open(path) as im:
            assert im.size == (32, 32)

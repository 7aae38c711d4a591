"""One rule per decision (issue 13): frame selection and render size decided by the contract, the same at the server's
submit and in the runner, so a job that can only fail is refused before it is queued."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from neurender.contract import ContractError, ErrorKind, PassManifest, RenderSettings, render_size
from neurender.errors import PassFolderError
from neurender.passes.folder import PassFolder
from neurender.server.app import create_app
from neurender.server.config import ServerConfig
from neurender.server.fake_runner import run_fake_render, write_fake_pass_folder
from neurender.server.live import LiveServer


@pytest.fixture()
def shot(tmp_path):
    """The demo shot's frames: 1-16."""
    return write_fake_pass_folder(tmp_path / "shot", frames=16, start=1)


def test_frame_selection_is_one_rule(shot):
    manifest = PassManifest.read(shot)
    assert manifest.select_frames() == list(range(1, 17))
    assert manifest.select_frames("5-8") == [5, 6, 7, 8] == manifest.select_frames((5, 8))
    for bad in ("0-100", "0-4", "10-17", "17-20"):
        with pytest.raises(ContractError) as contract_refusal:
            manifest.select_frames(bad)
        assert contract_refusal.value.kind is ErrorKind.BAD_FRAMES
        with pytest.raises(PassFolderError) as runner_refusal:  # what the runner opens the shot with
            PassFolder.open(shot, frames=bad)
        assert runner_refusal.value.kind is ErrorKind.BAD_FRAMES
        assert str(runner_refusal.value) == str(contract_refusal.value)


def test_render_size_rule():
    assert render_size(RenderSettings(), 100, 61) == (96, 56)
    assert render_size(RenderSettings(width=64, height=32), 100, 61) == (64, 32)
    with pytest.raises(ContractError, match="too small"):
        render_size(RenderSettings(), 7, 64)
    with pytest.raises(ContractError, match="exceeds"):
        render_size(RenderSettings(), 16384, 64)


def test_the_server_refuses_frames_outside_the_shot_at_submit(shot, tmp_path):
    config = ServerConfig(data_dir=tmp_path / "data", roots=[tmp_path], device="cpu")
    with LiveServer(create_app(config, runner=run_fake_render)) as server, \
            httpx.Client(base_url=server.url, timeout=10) as client:
        r = client.post("/jobs", json={"pass_dir": str(shot), "settings": {"frames": "0-100"}})
        assert r.status_code == 422, r.text
        assert r.json()["error_kind"] == "bad_frames"
        assert r.json()["detail"] == str(pytest.raises(ContractError, PassManifest.read(shot).select_frames,
                                                       "0-100").value)
        assert client.get("/jobs").json()["jobs"] == []  # nothing was queued
        ok = client.post("/jobs", json={"pass_dir": str(shot), "settings": {"frames": "5-8"}})
        assert ok.status_code == 201 and (ok.json()["frame_start"], ok.json()["frame_end"]) == (5, 8)


def test_the_job_shape_is_written_once():
    from neurender.contract import JOB_FIELDS
    from neurender.server.schemas import JobModel

    assert tuple(JobModel.model_fields) == JOB_FIELDS


def test_settings_hashes_keep_their_stored_layout():
    """The runner's fingerprints are stored in output folders (resume, look) and must not change with a refactor."""
    import hashlib
    import json

    from neurender.runner import MEMORY_OPTIONS, fingerprint, look_fingerprint

    s = RenderSettings(prompt="a", frames="1-3", batch_size=2, overwrite=True)
    data = s.to_dict()
    for name in ("overwrite", *MEMORY_OPTIONS):
        data.pop(name)
    blob = json.dumps({"settings": data, "manifest": "m", "frames": [1, 2], "size": [8, 8]}, sort_keys=True)
    assert fingerprint(s, "m", [1, 2], [8, 8]) == hashlib.sha256(blob.encode()).hexdigest()
    assert look_fingerprint(s, "m", [8, 8]) == look_fingerprint(RenderSettings(prompt="a", batch_size=3), "m", [8, 8])
    assert look_fingerprint(s, "m", [8, 8]) != look_fingerprint(RenderSettings(prompt="b"), "m", [8, 8])


def test_deflicker_steps_have_one_parser_and_one_base():
    from neurender.cli import _steps_arg
    from neurender.contract import img2img_start_step, parse_step_list

    assert parse_step_list(" 4, 9;14 ,") == [4, 9, 14] == _steps_arg("4,9,14")
    with pytest.raises(ContractError, match="whole numbers"):
        parse_step_list("4,x")
    with pytest.raises(ContractError, match="0-based"):
        RenderSettings(steps=10, deflicker_steps=[10]).check()
    RenderSettings(steps=10, deflicker_steps=[0, 9]).check()
    # img2img at strength 0.5 over 10 steps starts at step index 5: earlier deflicker steps would never run
    assert img2img_start_step(10, 0.5) == 5
    ok = dict(steps=10, consistency="keyframes", img2img_strength=0.5)
    RenderSettings(deflicker_steps=[5, 9], **ok).check()
    with pytest.raises(ContractError, match="before the img2img start"):
        RenderSettings(deflicker_steps=[2, 5], **ok).check()
    assert RenderSettings.from_dict({"deflicker_steps": [1, 2], "steps": 4}).deflicker_steps == [1, 2]


# ---- check() once per job per process boundary -------------------------------------------------------------------
@pytest.fixture()
def finished_shot(tmp_path):
    """A real pass folder whose frames are all finished already: a job opens and checks everything, loads nothing."""
    import numpy as np

    from neurender.frames import frame_path, write_png_atomic
    from support.synthetic_passes import write_synthetic_pass_folder

    passes = tmp_path / "passes"
    write_synthetic_pass_folder(passes, frames=3, width=32, height=24)
    out = tmp_path / "out"
    for f in PassManifest.read(passes).frame_numbers:
        write_png_atomic(frame_path(out, f), np.zeros((24, 32, 3), np.float32))
    return Path(passes), out


def _count_checks(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = RenderSettings.check

    def counting(self):
        calls.append(1)
        return original(self)

    monkeypatch.setattr(RenderSettings, "check", counting)
    return calls


def test_check_runs_once_on_the_cli_path(finished_shot, monkeypatch):
    from neurender.cli import main

    passes, out = finished_shot
    calls = _count_checks(monkeypatch)
    assert main(["render", str(passes), "--out", str(out), "--steps", "2", "--progress", "none"]) == 0
    assert len(calls) == 1


def test_check_runs_once_on_the_http_path(finished_shot, tmp_path, monkeypatch):
    import time

    from neurender.runner import run_render

    passes, out = finished_shot
    config = ServerConfig(data_dir=tmp_path / "data", roots=[tmp_path], device="cpu")
    calls = _count_checks(monkeypatch)
    with LiveServer(create_app(config, runner=run_render)) as server, \
            httpx.Client(base_url=server.url, timeout=10) as client:
        r = client.post("/jobs", json={"pass_dir": str(passes), "out_dir": str(out), "settings": {"steps": 2}})
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 30
        while (job := client.get(f"/jobs/{r.json()['id']}").json())["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert job["state"] == "done", job
    assert len(calls) == 1  # at submit; neither the worker nor the runner checks the stored settings again

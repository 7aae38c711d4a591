"""Review findings (issue 17 follow-ups): each test failed on the code before its fix."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from neurender.server.app import create_app
from neurender.server.config import ServerConfig
from neurender.server.fake_runner import run_fake_render, write_fake_pass_folder
from neurender.server.live import LiveServer
from neurender.server.store import JobStore


def _config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(data_dir=tmp_path / "data", roots=[tmp_path], device="cpu", progress_interval=0.02)


def _wait(client: httpx.Client, job_id: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job stuck in {job['state']}: {job}"
        time.sleep(0.02)


def test_the_worker_survives_a_database_error_while_recording_a_result(tmp_path, monkeypatch):
    """A full disk fails the render AND the first write of its result: the worker thread must go on (it died
    before: the job stayed 'running' forever and no later job ever ran)."""
    passes = write_fake_pass_folder(tmp_path / "shot", frames=1)
    real_finish = JobStore.finish
    calls = {"n": 0}

    def flaky_finish(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise sqlite3.OperationalError("database or disk is full")
        return real_finish(self, *args, **kwargs)

    monkeypatch.setattr(JobStore, "finish", flaky_finish)
    app = create_app(_config(tmp_path), runner=run_fake_render)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        ids = [client.post("/jobs", json={"pass_dir": str(passes), "settings": {"steps": 1}}).json()["id"]
               for _ in range(2)]
        first, second = (_wait(client, i) for i in ids)
    assert first["state"] == "failed" and "database or disk is full" in first["error"], first
    assert first["error_kind"] == "internal"
    assert second["state"] == "done", second


@pytest.mark.parametrize("value", ["inf", "1e400", "nan", "-5", "5000"])
def test_doctor_refuses_a_vram_budget_it_cannot_use(value, capsys):
    """`neurender doctor --vram-budget inf` ended in an OverflowError traceback; nan / -5 were silently taken as
    'the free memory'. Now exit 2 with one line, like the render's --vram-budget (the contract's 0..4096 GiB)."""
    from neurender.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["doctor", "--vram-budget", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--vram-budget" in err and "Traceback" not in err


def _lying_zip(folder: Path, size: int) -> bytes:
    """A pass-folder zip plus ``size`` zeros whose zip headers (central directory and local) claim 10 bytes."""
    import io
    import struct
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, f"shot/{p.name}")
        zf.writestr("shot/big.bin", b"\0" * size)
    data = bytearray(buf.getvalue())
    name = b"shot/big.bin"
    for magic, size_at, name_len_at, name_at in ((b"PK\x01\x02", 24, 28, 46), (b"PK\x03\x04", 22, 26, 30)):
        i = data.find(magic)
        while i != -1:
            n = struct.unpack_from("<H", data, i + name_len_at)[0]
            if bytes(data[i + name_at:i + name_at + n]) == name:
                struct.pack_into("<I", data, i + size_at, 10)
            i = data.find(magic, i + 4)
    return bytes(data)


def test_a_zip_that_lies_about_its_sizes_is_refused_and_leaves_nothing(tmp_path):
    """The declared sizes pass the quota; the entry holds 64 MiB. zipfile reads no more than the declared size and the
    CRC then fails: a 400 bad_upload, no job, no folder left (no test covered a lying zip before)."""
    folder = write_fake_pass_folder(tmp_path / "shot", frames=2)
    config = _config(tmp_path)
    with LiveServer(create_app(config, runner=run_fake_render)) as server, \
            httpx.Client(base_url=server.url, timeout=20) as client:
        r = client.post("/jobs/upload", files={"file": ("p.zip", _lying_zip(folder, 64 * 1024**2))},
                        data={"settings": "{}"})
        assert r.status_code == 400 and r.json()["error_kind"] == "bad_upload", r.text
        assert "big.bin" in r.json()["detail"]
        assert client.get("/jobs").json()["jobs"] == []
    assert list((tmp_path / "data" / "jobs").iterdir()) == []


def test_two_embeddings_whose_names_differ_only_in_case_are_refused_before_any_load(tmp_path):
    """The prompt word of an embedding is its file name in lower case (load_embeddings), so 'Grainy.pt' and
    'grainy.safetensors' are the same word; the clash check compared the names case-sensitively and let them
    through, and the second then failed inside diffusers after the model had loaded."""
    import torch
    from safetensors.torch import save_file

    from neurender.errors import ModelLoadError
    from neurender.models.embeddings import find_embeddings

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    torch.save({"string_to_param": {"*": torch.zeros(2, 32)}}, tmp_path / "a" / "Grainy.pt")
    save_file({"emb_params": torch.zeros(2, 32)}, str(tmp_path / "b" / "grainy.safetensors"))
    with pytest.raises(ModelLoadError, match="prompt word 'grainy'"):
        find_embeddings([tmp_path / "a", tmp_path / "b"])
    assert len(find_embeddings([tmp_path / "a"])) == 1


@pytest.mark.parametrize("text", ["model: sd15\n", "model:\n  params: [1, 2]\n", "- a\n- b\n", "model:\n  - x\n"])
def test_a_yaml_next_to_a_checkpoint_of_another_shape_is_not_a_traceback(tmp_path, text):
    """``model: sd15`` (model not a mapping) raised AttributeError: 'str' object has no attribute 'get'."""
    from neurender.errors import ModelLoadError
    from neurender.models.checks import prediction_from_yaml

    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(b"")
    (tmp_path / "m.yaml").write_text(text, encoding="utf-8")
    try:
        assert prediction_from_yaml(ckpt) in ("epsilon", None)
    except ModelLoadError as exc:
        assert "m.yaml" in str(exc)


def test_a_model_folder_with_sample_prediction_is_refused_before_its_weights_load(tmp_path):
    """README Models lists `sample` prediction as refused; with --prediction-type auto a folder whose scheduler config
    says 'sample' passed check_sd_model and the weights were loaded (the engine refuses it only when it converts an output)."""
    import json

    from neurender.errors import ModelLoadError
    from neurender.models.checks import check_sd_model

    (tmp_path / "scheduler").mkdir()
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": "sample"}))
    with pytest.raises(ModelLoadError, match="sample"):
        check_sd_model(tmp_path)
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": "v_prediction"}))
    assert check_sd_model(tmp_path).prediction_type == "v_prediction"
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": "sample"}))
    assert check_sd_model(tmp_path, prediction_type="epsilon").prediction_type == "epsilon"  # the setting overrides


def test_cancelling_a_job_purged_meanwhile_is_a_404_not_a_500(tmp_path, monkeypatch):
    """DELETE /jobs/{id} read the job (queued), then the job ended and another client purged it before the cancel
    was recorded: `assert updated is not None` answered 500. Simulated by a store that forgets the job at cancel."""
    from neurender.server.worker import Worker

    passes = write_fake_pass_folder(tmp_path / "shot", frames=1)
    monkeypatch.setattr(Worker, "cancel", lambda self, job_id: None)
    app = create_app(_config(tmp_path), runner=run_fake_render)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        monkeypatch.setattr(Worker, "notify", lambda self: None)
        app.state.service.worker._stop.set()  # keep the job queued
        job_id = client.post("/jobs", json={"pass_dir": str(passes), "settings": {"steps": 1}}).json()["id"]
        r = client.delete(f"/jobs/{job_id}")
        assert r.status_code == 404 and r.json()["error_kind"] == "not_found", r.text


def test_describing_the_models_does_not_wait_for_a_model_load(tmp_path):
    """GET /version asks PipelineCache.describe(); it waited on the lock get() holds for the whole load (minutes for
    a real checkpoint), so the add-on's 10 s handshake failed and every poll held a server thread meanwhile."""
    import threading

    from neurender.models.cache import PipelineCache

    release = threading.Event()
    started = threading.Event()

    class Loaded:
        prediction_type = "epsilon"
        random_weights = False
        description = "a stand-in"

    def slow_loader(*args, **kwargs):
        started.set()
        release.wait(20)
        return Loaded()

    cache = PipelineCache(loader=slow_loader)
    loader = threading.Thread(target=cache.get, args=("/m/model",), daemon=True)
    loader.start()
    assert started.wait(5)
    answer: list = []
    asker = threading.Thread(target=lambda: answer.append(cache.describe()), daemon=True)
    asker.start()
    asker.join(2.0)
    release.set()
    loader.join(10)
    assert answer == [{"loaded": False}], "describe() waited for the load"
    assert cache.describe()["loaded"] is True and cache.describe()["model"] == "/m/model"


def test_a_server_killed_while_writing_its_token_starts_again(tmp_path, monkeypatch):
    """The token file was created empty (O_EXCL) and written after: a kill between the two left an empty file and
    every later start failed ('holds no token'). Now the token is written to a temporary file and linked in place."""
    from neurender.server.auth import load_or_create_token

    path = tmp_path / "data" / "token"

    import secrets

    def killed(n):
        raise SystemExit("killed")  # the process dies after the file exists and before the token is in it

    monkeypatch.setattr(secrets, "token_urlsafe", killed)
    with pytest.raises(SystemExit):
        load_or_create_token(path)
    monkeypatch.undo()
    token = load_or_create_token(path)
    assert len(token) >= 32 and load_or_create_token(path) == token
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    assert [p.name for p in path.parent.iterdir()] == ["token"]


def test_the_token_is_created_where_hard_links_are_not_supported(tmp_path, monkeypatch):
    import os

    from neurender.server.auth import load_or_create_token

    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "token"
    token = load_or_create_token(path)
    assert load_or_create_token(path) == token and oct(path.stat().st_mode & 0o777) == oct(0o600)
    assert [p.name for p in tmp_path.iterdir()] == ["token"]


def test_merge_of_a_folder_without_chunks_is_an_error_not_a_success(tmp_path, caplog):
    """A farm's final `neurender merge OUT --final` with a mistyped OUT said '0 frames written' and exited 0: the
    farm job succeeded with no frames. Now exit 2 with one line; a folder with a chunks folder still merges."""
    from neurender.cli import main
    from neurender.farm.merge import CHUNKS_DIR

    assert main(["merge", str(tmp_path / "typo"), "--final", "--progress", "none"]) == 2
    assert "no chunks" in caplog.text and "Traceback" not in caplog.text
    assert not (tmp_path / "typo").exists()
    (tmp_path / "out" / CHUNKS_DIR).mkdir(parents=True)
    assert main(["merge", str(tmp_path / "out"), "--progress", "none"]) == 0

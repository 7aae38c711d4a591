"""Typed errors: every ErrorKind has a status and a docstring; every 4xx body of the server and every failed or
cancelled job record carries its ``error_kind``; the typed errors raised inside map to the right kind."""

from __future__ import annotations

import ast
import io
import sqlite3
import time
import zipfile
from pathlib import Path

import httpx
import pytest

import neurender.contract as contract
from neurender.contract import ERROR_STATUS, ContractError, ErrorKind, PassManifest, error_kind_of
from neurender.errors import JobCancelled, ModelLoadError, ModelMissing, PassFolderError
from neurender.server.app import create_app
from neurender.server.config import ServerConfig
from neurender.server.fake_runner import STEP_SECONDS_ENV, run_fake_render, write_fake_pass_folder
from neurender.server.live import LiveServer
from neurender.server.store import JobStore


def test_every_kind_has_a_status_and_a_docstring():
    assert set(ERROR_STATUS) == set(ErrorKind)
    assert all(400 <= s < 600 for s in ERROR_STATUS.values())
    values = [k.value for k in ErrorKind]
    assert len(values) == len(set(values)) and all(v == v.lower() for v in values)
    tree = ast.parse(Path(contract.__file__).read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ErrorKind"]
    body = cls.body
    for i, node in enumerate(body):
        if isinstance(node, ast.Assign):
            following = body[i + 1] if i + 1 < len(body) else None
            assert isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant), (
                f"ErrorKind.{node.targets[0].id} has no docstring"
            )


def test_typed_errors_map_to_kinds():
    assert error_kind_of(ContractError("x")) is ErrorKind.BAD_SETTINGS
    assert error_kind_of(ContractError("x", kind=ErrorKind.BAD_FRAMES)) is ErrorKind.BAD_FRAMES
    assert error_kind_of(PassFolderError("x")) is ErrorKind.BAD_PASS_FOLDER
    assert error_kind_of(ModelLoadError("x")) is ErrorKind.MODEL_INVALID
    assert error_kind_of(ModelMissing("x")) is ErrorKind.MODEL_MISSING
    assert error_kind_of(JobCancelled("x")) is ErrorKind.CANCELLED
    assert error_kind_of(MemoryError()) is ErrorKind.OUT_OF_MEMORY
    assert error_kind_of(RuntimeError("boom")) is ErrorKind.INTERNAL
    with pytest.raises(ContractError) as info:
        PassManifest.from_json("{not json")
    assert info.value.kind is ErrorKind.BAD_PASS_FOLDER
    with pytest.raises(ContractError) as info:
        contract.parse_frame_range("a-b")
    assert info.value.kind is ErrorKind.BAD_FRAMES


def test_a_missing_model_file_is_model_missing(tmp_path):
    from neurender.models.checkpoint_files import read_checkpoint

    with pytest.raises(ModelMissing):
        read_checkpoint(tmp_path / "nope.safetensors")


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_every_refusal_of_the_server_carries_its_kind(tmp_path, monkeypatch):
    monkeypatch.setenv(STEP_SECONDS_ENV, "0.2")
    passes = write_fake_pass_folder(tmp_path / "shot", frames=4, start=1)
    config = ServerConfig(
        data_dir=tmp_path / "data", roots=[tmp_path], device="cpu", max_queued_jobs=2, max_json_bytes=4096,
    )
    app = create_app(config, runner=run_fake_render)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        def kind_of(r: httpx.Response, status: int) -> str:
            assert r.status_code == status, r.text
            body = r.json()
            assert set(body) == {"detail", "error_kind"} and body["detail"], body
            return body["error_kind"]

        post = client.post
        assert kind_of(post("/jobs", json={"pass_dir": str(passes), "settings": {"steps": 0}}), 422) == "bad_settings"
        assert kind_of(post("/jobs", json={"pass_dir": str(passes), "settings": {"frames": "50-60"}}), 422) == (
            "bad_frames"
        )
        assert kind_of(post("/jobs", json={"pass_dir": str(tmp_path)}), 422) == "bad_pass_folder"
        assert kind_of(post("/jobs", json={"pass_dir": "/etc"}), 403) == "path_outside_roots"
        assert kind_of(post("/jobs", json={"pass_dir": "relative"}), 400) == "path_refused"
        assert kind_of(post("/jobs", json={"nope": 1}), 422) == "bad_request"
        assert kind_of(post("/jobs", content=b"x" * 5000, headers={"content-type": "application/json"}), 413) == (
            "too_large"
        )
        assert kind_of(post("/jobs/upload", files={"file": ("a.zip", b"not a zip")}), 400) == "bad_upload"
        assert kind_of(post("/jobs", json={}, headers={"Origin": "http://evil.example"}), 403) == "forbidden"
        assert kind_of(client.get("/jobs", headers={"Host": "evil.example"}), 421) == "wrong_host"
        assert kind_of(client.get("/jobs/nope"), 404) == "not_found"
        assert kind_of(client.get("/nowhere"), 404) == "not_found"
        out = str(tmp_path / "out")
        first = post("/jobs", json={"pass_dir": str(passes), "out_dir": out, "settings": {"steps": 50}})
        assert first.status_code == 201 and first.json()["error_kind"] is None
        assert kind_of(client.get(f"/jobs/{first.json()['id']}/frames/99"), 404) == "not_found"
        assert kind_of(post("/jobs", json={"pass_dir": str(passes), "out_dir": out}), 409) == "busy"
        assert post("/jobs", json={"pass_dir": str(passes), "settings": {"steps": 50}}).status_code == 201
        assert kind_of(post("/jobs", json={"pass_dir": str(passes)}), 429) == "queue_full"
        for job in client.get("/jobs").json()["jobs"]:
            client.delete(f"/jobs/{job['id']}")


def test_token_refusal_carries_its_kind(tmp_path):
    config = ServerConfig(data_dir=tmp_path / "data", roots=[tmp_path], device="cpu", require_token=True)
    app = create_app(config, runner=run_fake_render)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        r = client.get("/jobs")
        assert r.status_code == 401 and r.json()["error_kind"] == "token"


def _wait(client: httpx.Client, job_id: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.02)


@pytest.mark.parametrize(
    "raised, kind",
    [
        (ModelMissing("model /x does not exist"), "model_missing"),
        (ModelLoadError("model /x is corrupt"), "model_invalid"),
        (PassFolderError("passes_0001.exr is truncated"), "bad_pass_folder"),
        (RuntimeError("boom"), "internal"),
        (MemoryError(), "out_of_memory"),
    ],
)
def test_failed_job_records_carry_their_kind(tmp_path, raised, kind):
    passes = write_fake_pass_folder(tmp_path / "shot", frames=2)

    def runner(spec, **kw):
        raise raised

    app = create_app(ServerConfig(data_dir=tmp_path / "data", roots=[tmp_path], device="cpu"), runner=runner)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        job = client.post("/jobs", json={"pass_dir": str(passes)}).json()
        job = _wait(client, job["id"])
        assert job["state"] == "failed" and job["error_kind"] == kind and job["error"], job


def test_cancelled_job_records_carry_their_kind(tmp_path, monkeypatch):
    monkeypatch.setenv(STEP_SECONDS_ENV, "0.05")
    passes = write_fake_pass_folder(tmp_path / "shot", frames=4)
    app = create_app(ServerConfig(data_dir=tmp_path / "data", roots=[tmp_path], device="cpu"), runner=run_fake_render)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        running = client.post("/jobs", json={"pass_dir": str(passes), "settings": {"steps": 100}}).json()
        queued = client.post("/jobs", json={"pass_dir": str(passes), "settings": {"steps": 100, "seed": 1},
                                            "out_dir": str(tmp_path / "o2")}).json()
        assert client.delete(f"/jobs/{queued['id']}").json()["error_kind"] == "cancelled"
        while client.get(f"/jobs/{running['id']}").json()["state"] == "queued":
            time.sleep(0.02)
        client.delete(f"/jobs/{running['id']}")
        job = _wait(client, running["id"])
        assert job["state"] == "cancelled" and job["error_kind"] == "cancelled", job


def test_a_version_1_job_database_is_upgraded_in_place(tmp_path):
    path = tmp_path / "jobs.db"
    db = sqlite3.connect(str(path))
    db.executescript(
        """CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, state TEXT NOT NULL,
        settings TEXT NOT NULL, progress TEXT NOT NULL, error TEXT, created REAL NOT NULL, updated REAL NOT NULL,
        pass_dir TEXT NOT NULL, out_dir TEXT NOT NULL, frame_start INTEGER NOT NULL, frame_end INTEGER NOT NULL,
        frames_done TEXT NOT NULL, cancel_requested INTEGER NOT NULL DEFAULT 0, uploaded INTEGER NOT NULL DEFAULT 0);
        INSERT INTO jobs (id, state, settings, progress, error, created, updated, pass_dir, out_dir, frame_start,
        frame_end, frames_done) VALUES ('old', 'failed', '{}', '{}', 'bad', 1, 1, '/p', '/o', 1, 2, '[]');
        PRAGMA user_version=1;"""
    )
    db.commit()
    db.close()
    store = JobStore(path)
    old = store.get("old")
    assert old is not None and old.error == "bad" and old.error_kind is None
    store.finish("old", "failed", error="again", error_kind="internal")
    assert store.get("old").error_kind == "internal"
    store.close()

"""Issue 17: `neurender serve` as a hostile client and a careless pipeline would use it.

Every test here failed on the code before the fix (checked by running it against that code): no input reaches a 500,
one bad request cannot break the job list, the bind/token rule and the Host allow-list come from one address, and
the smaller refusals of the issue.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import time
import zipfile
from pathlib import Path
from typing import Any, Optional

import httpx
import pytest

from neurender.contract import MANIFEST_NAME
from neurender.server.app import create_app
from neurender.server.auth import TokenFileError
from neurender.server.config import ServerConfig
from neurender.server.fake_runner import STEP_SECONDS_ENV, run_fake_render, write_fake_pass_folder
from neurender.server.live import LiveServer
from neurender.server.store import JobStore


@pytest.fixture(autouse=True)
def fast_steps(monkeypatch):
    monkeypatch.setenv(STEP_SECONDS_ENV, "0.001")


def make_config(tmp_path: Path, **kw: Any) -> ServerConfig:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    return ServerConfig(data_dir=tmp_path / "data", roots=[root], device="cpu", **kw)


def post_json(client: httpx.Client, path: str, obj: Any) -> httpx.Response:
    """POST ``obj`` as JSON text with ``\\uXXXX`` escapes (so a lone surrogate travels as valid UTF-8 bytes, the way
    any JSON library on the client side sends it)."""
    return client.post(path, content=json.dumps(obj).encode("ascii"), headers={"content-type": "application/json"})


def upload(client: httpx.Client, data: bytes, settings: str = '{"steps": 1}') -> httpx.Response:
    return client.post("/jobs/upload", files={"file": ("passes.zip", data, "application/zip")}, data={"settings": settings})


def manifest_dict(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))


def write_manifest(folder: Path, data: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_NAME).write_text(json.dumps(data), encoding="utf-8")  # Infinity is written as JSON's Infinity
    return folder


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def listing_works(client: httpx.Client) -> list[dict[str, Any]]:
    r = client.get("/jobs")
    assert r.status_code == 200, r.text
    return r.json()["jobs"]


# ---- item 1: one request must not poison the service -----------------------------------------------------------


def test_lone_surrogate_text_is_refused_and_nothing_is_stored(tmp_path):
    config = make_config(tmp_path)
    root = tmp_path / "root"
    folder = write_fake_pass_folder(root / "shot", frames=1)
    with LiveServer(create_app(config, runner=run_fake_render)) as server, httpx.Client(base_url=server.url) as client:
        for settings in ({"prompt": "a \udc80 cat"}, {"negative_prompt": "\ud800"}, {"scheduler": "\udc80"},
                         {"loras": [{"path": str(root / "\udc80.safetensors")}]}):
            r = post_json(client, "/jobs", {"pass_dir": str(folder), "settings": settings})
            assert r.status_code == 422, (settings, r.text)
            assert r.json()["error_kind"] == "bad_settings", r.text
            assert "Unicode" in r.json()["detail"], r.text
        for body in ({"pass_dir": str(root / "\udc80")}, {"pass_dir": str(folder), "out_dir": str(root / "o\udc80")}):
            r = post_json(client, "/jobs", body)
            assert r.status_code == 400 and r.json()["error_kind"] == "path_refused", (body, r.text)
        r = upload(client, zip_bytes({MANIFEST_NAME: (folder / MANIFEST_NAME).read_bytes()}), '{"prompt": "\\udc80"}')
        assert r.status_code == 422 and r.json()["error_kind"] == "bad_settings", r.text
        assert listing_works(client) == []
        # the service still works for everyone else
        r = post_json(client, "/jobs", {"pass_dir": str(folder), "settings": {"prompt": "ünïcødé ✓", "steps": 1}})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        assert client.get(f"/jobs/{job_id}").status_code == 200
        assert [j["id"] for j in listing_works(client)] == [job_id]
    assert [p.name for p in (tmp_path / "data" / "jobs").iterdir()] == [job_id]  # no refused upload left behind


def test_manifest_text_must_be_valid_unicode(tmp_path):
    config = make_config(tmp_path)
    folder = write_fake_pass_folder(tmp_path / "root" / "shot", frames=1)
    data = manifest_dict(folder)
    data["scene"] = "Scene \udc80"
    write_manifest(folder, data)
    with LiveServer(create_app(config, runner=run_fake_render)) as server, httpx.Client(base_url=server.url) as client:
        r = post_json(client, "/jobs", {"pass_dir": str(folder)})
        assert r.status_code == 422 and r.json()["error_kind"] == "bad_pass_folder", r.text
        assert "Unicode" in r.json()["detail"]
        assert listing_works(client) == []


def test_a_stored_row_with_a_lone_surrogate_does_not_break_the_job_list(tmp_path):
    """A row written by an older server (or by hand) is answered with U+FFFD instead of failing every listing."""
    config = make_config(tmp_path)
    folder = write_fake_pass_folder(tmp_path / "root" / "shot", frames=1)
    with LiveServer(create_app(config, runner=run_fake_render)) as server, httpx.Client(base_url=server.url) as client:
        r = post_json(client, "/jobs", {"pass_dir": str(folder), "settings": {"steps": 1}})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
    db = sqlite3.connect(tmp_path / "data" / "jobs.sqlite3")
    settings = json.loads(db.execute("SELECT settings FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])
    settings["prompt"] = "poisoned \udc80"
    db.execute("UPDATE jobs SET settings = ? WHERE id = ?", (json.dumps(settings), job_id))
    db.commit()
    db.close()
    with LiveServer(create_app(config, runner=run_fake_render)) as server, httpx.Client(base_url=server.url) as client:
        jobs = listing_works(client)
        assert [j["id"] for j in jobs] == [job_id]
        assert jobs[0]["settings"]["prompt"] == "poisoned \ufffd"
        assert client.get(f"/jobs/{job_id}").status_code == 200
        assert client.delete(f"/jobs/{job_id}").status_code == 200


def test_the_store_keeps_nothing_it_could_not_answer_with(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    try:
        with pytest.raises(ValueError, match="cannot be stored"):
            store.add(job_id="a" * 32, settings={"prompt": "\udc80"}, pass_dir=str(tmp_path), out_dir=str(tmp_path),
                      frame_start=1, frame_end=1, frames_total=1, frames_done=[], uploaded=False)
        assert store.list() == []
    finally:
        store.close()


# ---- item 2: input that reached a 500 ---------------------------------------------------------------------------


def _bad_manifests(good: dict[str, Any]) -> dict[str, dict[str, Any]]:
    def variant(**changes: Any) -> dict[str, Any]:
        return {**json.loads(json.dumps(good)), **changes}

    camera = {"world_to_camera": 5, "fx": 50.0, "fy": 50.0, "cx": 32.0, "cy": 24.0}
    return {
        "frames-string": variant(frames="passes_0001.exr"),
        "frames-ints": variant(frames=[1, 2]),
        "width-infinity": variant(width=float("inf")),
        "fps-nan": variant(fps=float("nan")),
        "world-to-camera-5": variant(frames=[{**good["frames"][0], "camera": camera}]),
        "passes-list": variant(passes=["depth"]),
        "depth-range-number": variant(depth_range=3),
        "huge-int": variant(frame_start=10**30),
    }


def test_no_request_input_reaches_a_server_error(tmp_path):
    """Each case of the issue that answered 500 (and closed the keep-alive connection) answers a 4xx with a reason
    and its error_kind, over one connection that stays open."""
    config = make_config(tmp_path)
    root = tmp_path / "root"
    good = write_fake_pass_folder(root / "good", frames=2)
    long_name = "x" * 300
    cases: list[tuple[str, dict[str, Any], int, str]] = []
    for name, data in _bad_manifests(manifest_dict(good)).items():
        folder = write_manifest(root / name, data)
        cases.append((f"manifest {name}", {"pass_dir": str(folder)}, 422, "bad_pass_folder"))
    cases += [
        ("pass_dir component > 255 bytes", {"pass_dir": str(root / long_name)}, 400, "path_refused"),
        ("out_dir component > 255 bytes", {"pass_dir": str(good), "out_dir": str(root / long_name / "o")}, 400,
         "path_refused"),
        ("pass_dir multibyte component > 255 bytes", {"pass_dir": str(root / ("é" * 200))}, 400, "path_refused"),
        ("frames 5000 digits", {"pass_dir": str(good), "settings": {"frames": "1-" + "9" * 5000}}, 422, "bad_frames"),
        ("frames 20 digits", {"pass_dir": str(good), "settings": {"frames": "1-" + "9" * 20}}, 422, "bad_frames"),
    ]
    manifest = (good / MANIFEST_NAME).read_bytes()
    deep = "/".join(["d" * 200] * 24) + "/f"
    zips = {
        "file and folder of one name": {"shot/" + MANIFEST_NAME: manifest, "shot/a": b"1", "shot/a/b": b"2"},
        "folder then file of one name": {"shot/" + MANIFEST_NAME: manifest, "shot/a/b": b"2", "shot/a": b"1"},
        "entry name > 255 bytes": {"shot/" + MANIFEST_NAME: manifest, "shot/" + long_name: b"x"},
        "path deeper than the OS allows": {"shot/" + MANIFEST_NAME: manifest, "shot/" + deep: b"x"},
    }
    failures = []
    with LiveServer(create_app(config, runner=run_fake_render)) as server, httpx.Client(base_url=server.url) as client:
        for what, body, status, kind in cases:
            r = post_json(client, "/jobs", body)
            if r.status_code != status or r.json().get("error_kind") != kind or not r.json().get("detail"):
                failures.append((what, r.status_code, r.text[:200]))
            elif r.headers.get("connection", "").lower() == "close":
                failures.append((what, "closed the connection"))
        for what, entries in zips.items():
            r = upload(client, zip_bytes(entries))
            if r.status_code != 400 or r.json().get("error_kind") != "bad_upload":
                failures.append((what, r.status_code, r.text[:200]))
        assert listing_works(client) == []
    assert failures == []
    assert list((tmp_path / "data" / "jobs").iterdir()) == []


@pytest.mark.parametrize("case", ["frames-string", "frames-ints", "width-infinity", "world-to-camera-5"])
def test_cli_refuses_a_malformed_manifest_without_a_traceback(tmp_path, case, caplog):
    from neurender.cli import EXIT_INPUT, main

    good = write_fake_pass_folder(tmp_path / "good", frames=2)
    folder = write_manifest(tmp_path / case, _bad_manifests(manifest_dict(good))[case])
    assert main(["render", str(folder), "--out", str(tmp_path / "out"), "--progress", "none"]) == EXIT_INPUT
    assert "Traceback" not in caplog.text and "internal error" not in caplog.text
    assert f"{MANIFEST_NAME}: " in caplog.text  # the file and the reason, one line


def test_cli_refuses_a_frame_range_of_thousands_of_digits(tmp_path, caplog):
    from neurender.cli import EXIT_INPUT, main

    folder = write_fake_pass_folder(tmp_path / "good", frames=2)
    argv = ["render", str(folder), "--out", str(tmp_path / "out"), "--progress", "none", "--frames", "1-" + "9" * 5000]
    assert main(argv) == EXIT_INPUT
    assert "must look like 12-48" in caplog.text and "internal error" not in caplog.text


# ---- item 4: the bind, the token rule and the Host allow-list come from one address ---------------------------


def test_a_bind_to_another_loopback_address_answers_requests_addressed_to_it(tmp_path):
    config = make_config(tmp_path, host="127.0.0.2")
    assert not config.token_required
    app = create_app(config, runner=run_fake_render)
    with LiveServer(app, host="127.0.0.2") as server, httpx.Client(base_url=server.url) as client:
        assert listing_works(client) == []
        # localhost does not resolve to 127.0.0.2: a request addressed to it is a rebinding attempt
        r = client.get("/jobs", headers={"host": "localhost"})
        assert r.status_code == 421 and r.json()["error_kind"] == "wrong_host"
        assert "127.0.0.2" in r.json()["detail"]
        r = client.get("/jobs", headers={"host": "evil.example:8765"})
        assert r.status_code == 421


def test_the_default_bind_still_answers_localhost_and_refuses_other_names(tmp_path):
    app = create_app(make_config(tmp_path), runner=run_fake_render)
    with LiveServer(app) as server, httpx.Client(base_url=server.url) as client:
        for host in ("127.0.0.1", f"127.0.0.1:{server.port}", "localhost", f"localhost:{server.port}"):
            assert client.get("/jobs", headers={"host": host}).status_code == 200, host
        for host in ("127.0.0.2", "[::1]", "evil.example", "localhost.evil.example"):  # [::1] is another socket
            assert client.get("/jobs", headers={"host": host}).status_code == 421, host


def test_a_symlinked_token_file_is_refused(tmp_path):
    real = tmp_path / "real-token"
    real.write_text("t" * 40)
    real.chmod(0o600)
    link = tmp_path / "token"
    link.symlink_to(real)
    with pytest.raises(TokenFileError, match="regular file"):
        create_app(make_config(tmp_path, require_token=True, token_file=link), runner=run_fake_render)
    # the real file itself is accepted
    create_app(make_config(tmp_path, require_token=True, token_file=real), runner=run_fake_render)


# ---- item 6: smaller ones --------------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [("width", "128"), ("schema_version", True), ("frame_start", "1"),
                                          ("fps", "24"), ("clip_end", True)])
def test_manifest_values_of_the_wrong_type_are_refused_not_coerced(tmp_path, field, value):
    config = make_config(tmp_path)
    folder = write_fake_pass_folder(tmp_path / "root" / "shot", frames=1)
    data = manifest_dict(folder)
    data[field] = value
    write_manifest(folder, data)
    with LiveServer(create_app(config, runner=run_fake_render)) as server, httpx.Client(base_url=server.url) as client:
        r = post_json(client, "/jobs", {"pass_dir": str(folder)})
        assert r.status_code == 422 and r.json()["error_kind"] == "bad_pass_folder", r.text
        assert field in r.json()["detail"] or field.replace("_", " ") in r.json()["detail"]


def test_a_recovered_job_does_not_show_the_dead_process_progress(tmp_path):
    from neurender.contract import JOB_QUEUED, Progress

    store = JobStore(tmp_path / "jobs.sqlite3")
    store.add(job_id="j" * 32, settings={}, pass_dir=str(tmp_path), out_dir=str(tmp_path), frame_start=1,
              frame_end=4, frames_total=4, frames_done=[], uploaded=False)
    assert store.claim_next() is not None
    store.update_progress("j" * 32, Progress(frames_done=1, frames_total=4, step=7, steps_total=20, phase="denoise",
                                             message="frame 2 step 7/20", preview_step=7), frames_done=[1])
    store.close()  # the process dies here
    store = JobStore(tmp_path / "jobs.sqlite3")
    try:
        assert store.recover() == ["j" * 32]
        record = store.get("j" * 32)
        assert record.state == JOB_QUEUED
        assert record.progress["frames_done"] == 1 and record.progress["frames_total"] == 4  # what is on disk
        assert record.progress["step"] == 0 and record.progress["preview_step"] == 0
        assert record.progress["phase"] == "recovered" and "frame 2 step 7" not in record.progress["message"]
    finally:
        store.close()


# ---- item 3: pixel-level pass errors are found before any model loads, and nothing is written -----------------


class NoModels:
    """A pipeline cache that must never be asked for a model."""

    def get(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model was loaded before the pass folder was fully checked")

    def describe(self) -> dict[str, Any]:
        return {}

    def free(self) -> None:
        pass


def _broken_pass_folder(path: Path, case: str) -> Path:
    from neurender.contract import PASS_FILE_PATTERN
    from neurender.passes.exr import write_multilayer_exr

    from support.synthetic_passes import SyntheticScene

    scene = SyntheticScene(frames=3, width=32, height=24)
    scene.write(path, with_depth_range=False)
    bad = path / PASS_FILE_PATTERN.format(frame=2)
    if case == "truncated":
        data = bad.read_bytes()
        bad.write_bytes(data[: len(data) * 2 // 3])
        return path
    frames = [2] if case != "all-background" else scene.frame_numbers
    for f in frames:
        channels = scene.channels(f)
        depth = channels["ViewLayer.Depth.Z"].copy()
        if case == "all-background":
            depth[:] = 1e10
        else:
            depth[5, 7] = {"nan": float("nan"), "-inf": -float("inf"), "zero": 0.0, "negative": -2.0}[case]
        channels["ViewLayer.Depth.Z"] = depth
        write_multilayer_exr(path / PASS_FILE_PATTERN.format(frame=f), channels)
    return path


PIXEL_CASES = {"nan": "NaN", "-inf": "NaN, -inf", "zero": "zero", "negative": "negative", "truncated": "truncated",
               "all-background": "no geometry"}


@pytest.mark.parametrize("case", sorted(PIXEL_CASES))
def test_pixel_level_pass_errors_are_found_before_any_model_loads(tmp_path, case):
    from neurender.contract import RenderSettings
    from neurender.errors import PassFolderError
    from neurender.runner import JobSpec, run_render

    folder = _broken_pass_folder(tmp_path / "shot", case)
    out = tmp_path / "out"
    with pytest.raises(PassFolderError) as err:
        run_render(JobSpec(pass_dir=folder, out_dir=out, settings=RenderSettings(steps=1)), pipelines=NoModels())
    assert PIXEL_CASES[case] in str(err.value)
    assert not out.exists()  # not even OUT/.neurender/render.json


def test_the_server_creates_no_output_folder_for_a_job_that_fails_its_pass_check(tmp_path):
    config = make_config(tmp_path)
    root = tmp_path / "root"
    folder = _broken_pass_folder(root / "shot", "nan")
    out = root / "renders" / "shot"
    app = create_app(config, pipelines=NoModels())  # the real runner
    with LiveServer(app) as server, httpx.Client(base_url=server.url) as client:
        r = post_json(client, "/jobs", {"pass_dir": str(folder), "out_dir": str(out), "settings": {"steps": 1}})
        assert r.status_code == 201, r.text
        job = r.json()
        for _ in range(500):
            job = client.get(f"/jobs/{job['id']}").json()
            if job["state"] in ("done", "failed", "cancelled"):
                break
            time.sleep(0.02)
        assert job["state"] == "failed" and job["error_kind"] == "bad_pass_folder", job
        assert "NaN" in job["error"]
    assert not out.exists() and not out.parent.exists()


def test_the_server_checks_frame_files_at_submit(tmp_path):
    config = make_config(tmp_path)
    root = tmp_path / "root"
    missing = write_fake_pass_folder(root / "missing", frames=3)
    (missing / "passes_0002.exr").unlink(missing_ok=True)
    wrong_size = write_fake_pass_folder(root / "wrong-size", frames=2)
    data = manifest_dict(wrong_size)
    data["width"] = 32
    write_manifest(wrong_size, data)
    with LiveServer(create_app(config, runner=run_fake_render)) as server, httpx.Client(base_url=server.url) as client:
        for folder, reason in ((missing, "missing"), (wrong_size, "manifest says 32x48")):
            r = post_json(client, "/jobs", {"pass_dir": str(folder), "out_dir": str(root / "o")})
            assert r.status_code == 422 and r.json()["error_kind"] == "bad_pass_folder", r.text
            assert reason in r.json()["detail"]
        assert listing_works(client) == []
    assert not (root / "o").exists()


def test_a_frame_file_linking_outside_the_roots_is_refused(tmp_path):
    config = make_config(tmp_path)
    root = tmp_path / "root"
    secret = write_fake_pass_folder(tmp_path / "secret", frames=2)
    folder = write_fake_pass_folder(root / "shot", frames=2)
    (folder / "passes_0002.exr").unlink(missing_ok=True)
    (folder / "passes_0002.exr").symlink_to(secret / "passes_0002.exr")
    inner = write_fake_pass_folder(root / "inner", frames=2)
    (inner / "passes_0002.exr").unlink(missing_ok=True)
    (inner / "passes_0002.exr").symlink_to(folder / "passes_0001.exr")  # a link inside the roots is fine
    with LiveServer(create_app(config, runner=run_fake_render)) as server, httpx.Client(base_url=server.url) as client:
        r = post_json(client, "/jobs", {"pass_dir": str(folder)})
        assert r.status_code == 403 and r.json()["error_kind"] == "path_outside_roots", r.text
        assert "frame 2" in r.json()["detail"]
        r = post_json(client, "/jobs", {"pass_dir": str(inner), "settings": {"steps": 1}})
        assert r.status_code == 201, r.text


def test_out_dir_may_not_point_into_the_server_data_folder(tmp_path):
    config = make_config(tmp_path)
    folder = write_fake_pass_folder(tmp_path / "root" / "shot", frames=1)
    data = tmp_path / "data"
    with LiveServer(create_app(config, runner=run_fake_render)) as server, httpx.Client(base_url=server.url) as client:
        for out in (data, data / "jobs", data / "x" / "y"):
            r = post_json(client, "/jobs", {"pass_dir": str(folder), "out_dir": str(out)})
            assert r.status_code == 400 and r.json()["error_kind"] == "path_refused", (out, r.text)
            assert "data folder" in r.json()["detail"]
        assert listing_works(client) == []
    assert not (data / "x").exists()


# ---- item 5: disk - retention, purge, upload quota, file modes -------------------------------------------------


def _wait_final(client: httpx.Client, job_id: str) -> dict[str, Any]:
    for _ in range(1000):
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} did not finish")


def _zip_folder(folder: Path, prefix: str = "shot/", extra: Optional[dict[str, bytes]] = None) -> bytes:
    entries = {prefix + p.name: p.read_bytes() for p in sorted(folder.iterdir())}
    entries.update(extra or {})
    return zip_bytes(entries)


def test_purge_removes_an_uploaded_job_and_its_files_but_never_a_client_out_dir(tmp_path):
    config = make_config(tmp_path)
    root = tmp_path / "root"
    folder = write_fake_pass_folder(root / "shot", frames=2)
    jobs_dir = tmp_path / "data" / "jobs"
    with LiveServer(create_app(config, runner=run_fake_render)) as server, httpx.Client(base_url=server.url) as client:
        r = upload(client, _zip_folder(folder))
        assert r.status_code == 201, r.text
        uploaded = r.json()["id"]
        r = post_json(client, "/jobs", {"pass_dir": str(folder), "out_dir": str(root / "renders"),
                                        "settings": {"steps": 1}})
        assert r.status_code == 201, r.text
        own_out = r.json()["id"]
        assert _wait_final(client, uploaded)["state"] == "done" and _wait_final(client, own_out)["state"] == "done"
        assert (jobs_dir / uploaded / "passes").is_dir() and (jobs_dir / uploaded / "frames").is_dir()

        assert client.delete(f"/jobs/{uploaded}").status_code == 200  # without purge: a no-op on a final job
        assert (jobs_dir / uploaded).exists()
        r = client.delete(f"/jobs/{uploaded}", params={"purge": "1"})
        assert r.status_code == 200 and r.json()["id"] == uploaded, r.text
        assert not (jobs_dir / uploaded).exists()
        assert client.get(f"/jobs/{uploaded}").status_code == 404
        assert client.delete(f"/jobs/{uploaded}", params={"purge": "1"}).status_code == 404

        r = client.delete(f"/jobs/{own_out}", params={"purge": "true"})
        assert r.status_code == 200, r.text
        assert sorted(p.name for p in (root / "renders").glob("frame_*.png")) == ["frame_0001.png", "frame_0002.png"]
        assert [j["id"] for j in listing_works(client)] == []


def test_purge_refuses_an_active_job(tmp_path, monkeypatch):
    monkeypatch.setenv(STEP_SECONDS_ENV, "0.05")
    config = make_config(tmp_path)
    folder = write_fake_pass_folder(tmp_path / "root" / "shot", frames=4)
    with LiveServer(create_app(config, runner=run_fake_render)) as server, httpx.Client(base_url=server.url) as client:
        job_id = upload(client, _zip_folder(folder), '{"steps": 20}').json()["id"]
        r = client.delete(f"/jobs/{job_id}", params={"purge": "1"})
        assert r.status_code == 409 and r.json()["error_kind"] == "busy", r.text
        assert (tmp_path / "data" / "jobs" / job_id / "passes").is_dir()
        client.delete(f"/jobs/{job_id}")  # cancel
        assert _wait_final(client, job_id)["state"] == "cancelled"
        assert client.delete(f"/jobs/{job_id}", params={"purge": "1"}).status_code == 200
        assert not (tmp_path / "data" / "jobs" / job_id).exists()


def test_keep_days_purges_old_finished_jobs_at_start_up(tmp_path):
    config = make_config(tmp_path, keep_days=7)
    folder = write_fake_pass_folder(tmp_path / "root" / "shot", frames=1)
    jobs_dir = tmp_path / "data" / "jobs"
    with LiveServer(create_app(config, runner=run_fake_render)) as server, httpx.Client(base_url=server.url) as client:
        old = upload(client, _zip_folder(folder)).json()["id"]
        recent = upload(client, _zip_folder(folder)).json()["id"]
        _wait_final(client, old), _wait_final(client, recent)
    orphan = jobs_dir / ("f" * 32)  # an upload interrupted by a crash: a folder without a record
    orphan.mkdir()
    long_ago = time.time() - 8 * 86400
    os.utime(orphan, (long_ago, long_ago))
    db = sqlite3.connect(tmp_path / "data" / "jobs.sqlite3")
    db.execute("UPDATE jobs SET updated = ? WHERE id = ?", (long_ago, old))
    db.commit()
    db.close()
    with LiveServer(create_app(config, runner=run_fake_render)) as server, httpx.Client(base_url=server.url) as client:
        deadline = time.monotonic() + 10
        while (jobs_dir / old).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [j["id"] for j in listing_works(client)] == [recent]
    assert not (jobs_dir / old).exists() and not orphan.exists() and (jobs_dir / recent / "passes").is_dir()


def test_keep_days_flag(tmp_path):
    import argparse

    from neurender.server.cli_serve import build_config, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["serve", "--data-dir", str(tmp_path), "--keep-days", "2.5"])
    assert build_config(args).keep_days == 2.5
    assert build_config(parser.parse_args(["serve", "--data-dir", str(tmp_path)])).keep_days == 30
    with pytest.raises(ValueError, match="keep-days"):
        build_config(parser.parse_args(["serve", "--data-dir", str(tmp_path), "--keep-days", "-1"]))


def test_upload_quota_follows_what_the_manifest_needs(tmp_path):
    """The issue's 3.9 MiB zip (a valid pass folder plus 1 GiB of zeros) in small: a 2-frame 64x48 pass folder plus
    40 MiB of zeros is refused under the default limits, and nothing of it stays on disk."""
    config = make_config(tmp_path)
    folder = write_fake_pass_folder(tmp_path / "root" / "shot", frames=2)
    padded = _zip_folder(folder, extra={"shot/padding.bin": b"\0" * (40 * 1024**2)})
    assert len(padded) < 1024**2
    with LiveServer(create_app(config, runner=run_fake_render)) as server, httpx.Client(base_url=server.url) as client:
        r = upload(client, padded)
        assert r.status_code == 413 and r.json()["error_kind"] == "too_large", r.text
        assert "manifest allows" in r.json()["detail"]
        assert upload(client, _zip_folder(folder)).status_code == 201  # the folder alone is fine
    assert len(list((tmp_path / "data" / "jobs").iterdir())) == 1


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_frames_and_records_are_written_with_the_process_umask(tmp_path, umask, mode):
    import numpy as np

    from neurender.deflicker.sequence_io import read_image, write_image
    from neurender.frames import write_bytes_atomic, write_png_atomic

    previous = os.umask(umask)
    try:
        write_bytes_atomic(tmp_path / ".neurender" / "render.json", b"{}")  # render.json, state.pt, previews
        write_png_atomic(tmp_path / "frame_0001.png", np.zeros((8, 8, 3), np.float32))
        write_image(tmp_path / "frame_0002.png", np.zeros((8, 8, 3), np.float32), read_image(tmp_path / "frame_0001.png"))
    finally:
        os.umask(previous)
    for name in (".neurender/render.json", "frame_0001.png", "frame_0002.png"):
        assert oct((tmp_path / name).stat().st_mode & 0o777) == oct(mode), name


# ---- item 6: a 405 lists every method of its path ------------------------------------------------------------


def test_a_405_lists_every_method_of_the_path(tmp_path):
    with LiveServer(create_app(make_config(tmp_path), runner=run_fake_render)) as server, \
            httpx.Client(base_url=server.url) as client:
        for method, path, allowed in (("PUT", "/jobs", "GET, POST"), ("PATCH", "/jobs/abc", "DELETE, GET"),
                                      ("POST", "/version", "GET")):
            r = client.request(method, path)
            assert r.status_code == 405 and r.json()["error_kind"] == "method_not_allowed", (method, path, r.text)
            assert r.headers["allow"] == allowed, (method, path)
            assert method in r.json()["detail"]


# ---- item 6: RenderSettings published in the OpenAPI spec as a typed object -------------------------------------


def test_openapi_publishes_render_settings_as_a_typed_object_generated_from_the_contract(tmp_path):
    import dataclasses

    import jsonschema

    from neurender.contract import CONTROL_KINDS, DTYPES, SCHEDULERS, RenderSettings

    with LiveServer(create_app(make_config(tmp_path), runner=run_fake_render)) as server, \
            httpx.Client(base_url=server.url) as client:
        spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    settings = schemas["JobRequest"]["properties"]["settings"]
    assert settings["type"] == "object" and settings["additionalProperties"] is False
    props = settings["properties"]
    defaults = RenderSettings()
    assert set(props) == {f.name for f in dataclasses.fields(RenderSettings)}
    json_type = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}
    for name, schema in props.items():
        value = getattr(defaults, name)
        assert schema["type"] == json_type[type(value)], name
        assert schema["default"] == (value if not isinstance(value, list) else []), name
    assert props["scheduler"]["enum"] == list(SCHEDULERS) and props["dtype"]["enum"] == list(DTYPES)
    assert props["controlnets"]["items"]["properties"]["kind"]["enum"] == list(CONTROL_KINDS)
    assert props["controlnets"]["items"]["required"] == ["kind", "model"]
    assert props["loras"]["items"]["properties"]["weight"] == {"type": "number", "default": 1.0}
    assert schemas["JobModel"]["properties"]["settings"]["properties"] == props  # the answers carry the same
    # the contract's own settings validate against it; an unknown key or a wrong type does not
    jsonschema.validate(defaults.to_dict(), settings)
    for bad in ({"stepz": 3}, {"steps": "20"}, {"scheduler": "turbo"}, {"controlnets": [{"kind": "depth"}]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, settings)


@pytest.mark.parametrize("which", ["pass_dir", "out"])
def test_cli_refuses_a_path_component_over_255_bytes_without_a_traceback(tmp_path, which, caplog):
    from neurender.cli import EXIT_INPUT, main

    folder = write_fake_pass_folder(tmp_path / "good", frames=1)
    long_path = str(tmp_path / ("x" * 300) / "y")
    argv = ["render", long_path if which == "pass_dir" else str(folder), "--out",
            long_path if which == "out" else str(tmp_path / "out"), "--progress", "none"]
    assert main(argv) == EXIT_INPUT
    assert "File name too long" in caplog.text and "internal error" not in caplog.text

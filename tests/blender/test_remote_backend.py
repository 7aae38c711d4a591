"""A backend that does not share Blender's disk: the pass folder goes up as a zip (POST /jobs/upload), the frames
come back (GET /jobs/{id}/frames/{n}) into the scene's output folder, and the strip is built from those copies.

Against the real ``neurender serve`` from the backend env, with ``--require-token`` and ``--root`` set to its own
data folder only, so the server cannot read Blender's pass folder by path: only the upload path can work. The
diffusion is replaced by the server's fake runner (deterministic PNGs, ``NEURENDER_FAKE_STEP_SECONDS`` per step);
everything between the add-on and the runner is the real thing.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
import types
import urllib.request
import zipfile

import pytest

from addon_modules import load

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SERVE = os.path.join(REPO, ".venv", "bin", "neurender")
FAKE_RUNNER = "neurender.server.fake_runner:run_fake_render"

client = load("client")
remote = load("remote")
contract = load("neurender_contract")

needs_backend = pytest.mark.skipif(not os.path.isfile(SERVE), reason="the backend env (.venv) has no neurender")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    data = tmp_path_factory.mktemp("server") / "data"
    port = _free_port()
    log_path = data.parent / "serve.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", NEURENDER_FAKE_STEP_SECONDS="0.15")
    for var in ("PYTHONHOME", "PYTHONPATH"):
        env.pop(var, None)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([SERVE, "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data),
                                 "--root", str(data), "--require-token", "--runner", FAKE_RUNNER,
                                 "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                with urllib.request.urlopen(url + "/version", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("neurender serve did not start:\n" + log_path.read_text()[-3000:])
                time.sleep(0.2)
        yield types.SimpleNamespace(url=url, data=data, token=(data / "token").read_text().strip(), log=log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


_DEPTH_EXR = """
import sys
from pathlib import Path
import numpy as np
from neurender.passes.exr import write_multilayer_exr
for name in sys.argv[1:]:
    write_multilayer_exr(Path(name), {"ViewLayer.Depth.Z": np.full((48, 64), 2.0 + len(name) % 7, np.float32)})
"""


def _pass_folder(path, frames=(1, 2, 3, 4), real_exr=False):
    """A manifest plus stand-in EXR bytes (the fake runner reads only the manifest) and one stale extra file.

    ``real_exr``: small depth-only EXRs written by the backend env instead (a server checks every frame's EXR header
    at submit)."""
    path.mkdir(parents=True, exist_ok=True)
    m = contract.PassManifest(frame_start=frames[0], frame_end=frames[-1], fps=24.0, width=64, height=48,
                              clip_start=0.1, clip_end=100.0, passes={"depth": "ViewLayer.Depth"},
                              frames=[contract.FrameEntry(frame=f, file=f"passes_{f:04d}.exr") for f in frames],
                              depth_range=(1.0, 10.0))
    (path / "manifest.json").write_text(m.to_json())
    for f in frames:
        (path / f"passes_{f:04d}.exr").write_bytes(hashlib.sha256(str(f).encode()).digest() * (300 + f))
    if real_exr:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
        subprocess.run([os.path.join(REPO, ".venv", "bin", "python"), "-c", _DEPTH_EXR,
                        *(str(path / f"passes_{f:04d}.exr") for f in frames)],
                       check=True, env={**env, "PYTHONPATH": os.path.join(REPO, "backend")})
    (path / "passes_0099.exr").write_bytes(b"stale")  # not in the manifest: must not be uploaded
    return path


def _sha(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_shares_disk_decision():
    auto = remote.SHARED_AUTO
    for url in ("http://127.0.0.1:8765", "http://localhost:9", "http://[::1]:8765/", "http://127.3.4.5"):
        assert remote.shares_disk(auto, url, started_local=False) is True, url
    for url in ("http://render-box:8765", "http://10.0.0.5:8765", "https://farm.example.com", "http://0.0.0.0:1"):
        assert remote.shares_disk(auto, url, started_local=False) is False, url
    assert remote.shares_disk(auto, "http://render-box:8765", started_local=True) is True
    assert remote.shares_disk(remote.SHARED_NO, "http://127.0.0.1:8765", started_local=True) is False
    assert remote.shares_disk(remote.SHARED_YES, "http://render-box:8765", started_local=False) is True


def test_zip_holds_the_manifest_and_the_listed_files_only(tmp_path):
    folder = _pass_folder(tmp_path / "passes")
    seen = []
    size = remote.zip_pass_folder(str(folder), str(tmp_path / "up.zip"), lambda done, total: seen.append((done, total)))
    assert size == os.path.getsize(tmp_path / "up.zip")
    with zipfile.ZipFile(tmp_path / "up.zip") as zf:
        assert zf.namelist() == ["manifest.json"] + [f"passes_{f:04d}.exr" for f in (1, 2, 3, 4)]
        infos = {i.filename: i for i in zf.infolist()}
        assert infos["passes_0001.exr"].compress_type == zipfile.ZIP_STORED  # EXRs are compressed already
        assert infos["manifest.json"].compress_type == zipfile.ZIP_DEFLATED
        assert zf.read("passes_0003.exr") == (folder / "passes_0003.exr").read_bytes()
    total = sum((folder / n).stat().st_size for n in ["manifest.json"] + [f"passes_{f:04d}.exr" for f in (1, 2, 3, 4)])
    assert seen[-1] == (total, total) and len(seen) == 5
    (folder / "passes_0002.exr").unlink()
    with pytest.raises(contract.ContractError, match="passes_0002.exr of frame 2 is missing"):
        remote.zip_pass_folder(str(folder), str(tmp_path / "again.zip"))
    assert sorted(os.listdir(tmp_path)) == ["passes", "up.zip"]  # no partial zip left behind


@needs_backend
def test_upload_and_download_against_real_serve(serve, tmp_path):
    folder = _pass_folder(tmp_path / "shot" / "passes", real_exr=True)
    c = client.Client(serve.url, serve.token)
    # the server cannot read this computer's folder by path: it lies outside its --root
    with pytest.raises(client.BackendError, match="outside the folders this server may use"):
        c.submit(str(folder), {"steps": 2})
    for token in ("", "wrong"):
        with pytest.raises(client.BackendError) as err:
            client.Client(serve.url, token).jobs()
        assert err.value.kind == client.UNAUTHORIZED and err.value.status == 401

    zip_path = tmp_path / "up.zip"
    remote.zip_pass_folder(str(folder), str(zip_path))
    with pytest.raises(client.BackendError) as err:
        client.Client(serve.url, "wrong").submit_upload(str(zip_path), {"steps": 2})
    assert err.value.kind == client.UNAUTHORIZED
    sent = []
    job = c.submit_upload(str(zip_path), {"steps": 2, "prompt": "tin", "frames": "1-4"},
                          lambda done, total: sent.append((done, total)))
    assert job["state"] in ("queued", "running") and (job["frame_start"], job["frame_end"]) == (1, 4)
    assert sent[-1][0] == sent[-1][1] > zip_path.stat().st_size  # the whole multipart body went out
    server_passes = serve.data / "jobs" / job["id"] / "passes"
    assert sorted(os.listdir(server_passes)) == ["manifest.json"] + [f"passes_{f:04d}.exr" for f in (1, 2, 3, 4)]
    assert _sha(server_passes / "passes_0004.exr") == _sha(folder / "passes_0004.exr")

    out = tmp_path / "shot" / "frames"
    d = remote.FrameDownloader(c, job["id"], str(out))
    counts = []
    deadline = time.monotonic() + 60
    while True:
        snap = d.poll()
        counts.append(len(snap["frames_downloaded"]))
        assert snap["out_dir"] == str(out) and snap["server_out_dir"].startswith(str(serve.data))
        if snap["state"] in contract.JOB_FINAL_STATES or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert snap["state"] == "done", snap
    assert any(0 < n < 4 for n in counts), counts  # frames arrive while the job runs, not only at the end
    assert snap["frames_downloaded"] == [1, 2, 3, 4] and d.fetched == 4
    server_frames = serve.data / "jobs" / job["id"] / "frames"
    for f in (1, 2, 3, 4):
        name = f"frame_{f:04d}.png"
        assert _sha(out / name) == _sha(server_frames / name)
    assert json.loads((out / remote.LEDGER_NAME).read_text()) == {"job": job["id"], "frames": [1, 2, 3, 4]}
    assert not [n for n in os.listdir(out) if n.endswith(".part")]

    # polling again (e.g. after Blender restarted) skips what is here; a deleted frame is fetched again
    again = remote.FrameDownloader(c, job["id"], str(out))
    assert again.poll()["frames_downloaded"] == [1, 2, 3, 4] and again.fetched == 0
    (out / "frame_0002.png").unlink()
    third = remote.FrameDownloader(c, job["id"], str(out))
    third.poll()
    assert third.fetched == 1 and (out / "frame_0002.png").is_file()


@needs_backend
def test_blender_uploads_and_builds_the_strip_from_downloaded_frames(run_scenario, serve, tmp_path):
    r = run_scenario("remote_backend", url=serve.url, token=serve.token)
    out = tmp_path / "shot"
    assert not str(out).startswith(str(serve.data))  # Blender's files are invisible to the server by path
    assert r["auto_shares"] is True and r["no_shares"] is False  # loopback -> by path unless overridden

    assert "refused the access token" in r["wrong_token"]["error"], r["wrong_token"]
    ok = r["ok"]
    assert ok["result"] == ["FINISHED"] and ok["state"] == "done" and ok["error"] == "", ok
    frames_dir = out / "frames" / "v002"  # v001 is the render refused for the wrong token
    assert os.path.normpath(ok["out_dir"]) == os.path.normpath(str(frames_dir))
    ours = [s for s in r["strips"] if s["ours"]]
    assert len(ours) == 1 and (ours[0]["start"], ours[0]["end"]) == (1, 5)
    assert ours[0]["elements"] == [f"frame_{f:04d}.png" for f in range(1, 5)]
    assert os.path.normpath(ours[0]["directory"]) == os.path.normpath(str(frames_dir))

    job_dir = serve.data / "jobs" / ok["job_id"]
    for f in range(1, 5):  # the local copies are the server's frames, byte for byte
        name = f"frame_{f:04d}.png"
        assert _sha(frames_dir / name) == _sha(job_dir / "frames" / name)
    # the server rendered from the uploaded copy of Blender's pass folder
    local_manifest = json.loads((out / "passes" / "v002" / "manifest.json").read_text())
    assert json.loads((job_dir / "passes" / "manifest.json").read_text()) == local_manifest
    for entry in local_manifest["frames"]:
        assert _sha(job_dir / "passes" / entry["file"]) == _sha(out / "passes" / "v002" / entry["file"])
    assert not [n for n in r["root_listing"] if "upload" in n]  # the temporary zip is gone

    msgs = r["messages"]
    assert "Uploading the pass folder: 100%" in msgs and "Zipping the pass folder: 100%" in msgs, msgs
    assert any(m.startswith("Submitting frames 1-4 (uploading") for m in msgs)
    assert any(m.startswith("Done: 4 frames on VSE channel 1") for m in msgs), msgs
    downloaded = [int(m.rsplit(", ", 1)[1].split()[0]) for m in msgs if m.endswith(" downloaded")]
    assert downloaded == sorted(downloaded) and any(0 < n < 4 for n in downloaded), msgs  # progress while running

    # the UI path: submit returns at once; zip, upload and downloads ran off the main thread, which stayed free
    ui = r["ui"]
    assert ui["state"] == "done" and ui["error"] == "" and ui["job_id"] not in ("", ok["job_id"]), ui
    assert ui["submit_returned_state"] == "submitting"
    assert ui["threads"]["zip"] == [True] and ui["threads"]["upload"] == [True]
    assert ui["threads"]["frame"] == [True] * 4, ui["threads"]  # a new job: all four frames fetched again
    assert ui["max_pump_s"] < 0.5, ui["max_pump_s"]
    assert any(m.startswith("Done: 4 frames on VSE channel 1") for m in ui["messages"]), ui["messages"]
    assert os.path.normpath(ui["out_dir"]) == os.path.normpath(str(out / "frames" / "v003"))
    ledger = json.loads((out / "frames" / "v003" / remote.LEDGER_NAME).read_text())
    assert ledger == {"job": ui["job_id"], "frames": [1, 2, 3, 4]}

"""Hostile input to `neurender serve` over real HTTP: path traversal and symlink escapes, zip-slip and other unsafe
archives, oversized uploads, missing/invalid tokens, browser-origin requests."""

from __future__ import annotations

import io
import os
import sqlite3
import stat
import time
import zipfile
from pathlib import Path
from typing import Optional

import httpx
import pytest

from neurender.server.app import create_app
from neurender.server.auth import TokenFileError, load_or_create_token
from neurender.server.config import ServerConfig, is_loopback
from neurender.server.fake_runner import STEP_SECONDS_ENV, run_fake_render, write_fake_pass_folder
from neurender.server.live import LiveServer


@pytest.fixture(autouse=True)
def fast_steps(monkeypatch):
    monkeypatch.setenv(STEP_SECONDS_ENV, "0.001")


def make_config(tmp_path: Path, **kw) -> ServerConfig:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    return ServerConfig(data_dir=tmp_path / "data", roots=[root], device="cpu", **kw)


def zip_bytes(entries: dict[str, bytes], symlinks: Optional[dict[str, str]] = None) -> bytes:
    symlinks = symlinks or {}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in symlinks.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def pass_zip(tmp_path: Path, prefix: str = "shot/", extra: Optional[dict[str, bytes]] = None,
             symlinks: Optional[dict[str, str]] = None) -> bytes:
    extra = extra or {}
    folder = write_fake_pass_folder(tmp_path / "zipsrc", frames=2)
    entries = {prefix + p.name: p.read_bytes() for p in sorted(folder.iterdir())}  # manifest + frame EXRs
    entries.update(extra)
    return zip_bytes(entries, symlinks)


def upload(client: httpx.Client, data: bytes, settings: str = '{"steps": 1}') -> httpx.Response:
    return client.post("/jobs/upload", files={"file": ("passes.zip", data, "application/zip")}, data={"settings": settings})


def test_path_traversal_and_symlink_escapes_are_refused(tmp_path):
    config = make_config(tmp_path)
    root = tmp_path / "root"
    inside = write_fake_pass_folder(root / "shot", frames=1)
    outside = write_fake_pass_folder(tmp_path / "secret", frames=1)
    (root / "link").symlink_to(outside, target_is_directory=True)
    app = create_app(config, runner=run_fake_render)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        cases = [
            (str(root / "shot" / ".." / ".." / "secret"), 400, "'..'"),
            (str(outside), 403, "outside"),
            (str(root / "link"), 403, "outside"),  # symlink inside the root pointing out
            ("/etc", 403, "outside"),
            ("shot", 400, "absolute"),
            ("", 400, "absolute"),
            (str(root) + "/\x00x", 400, "not a valid path"),
        ]
        for pass_dir, status, reason in cases:
            r = client.post("/jobs", json={"pass_dir": pass_dir})
            assert r.status_code == status, (pass_dir, r.text)
            assert reason in r.json()["detail"], (pass_dir, r.text)
        for out_dir in (str(tmp_path / "elsewhere"), str(root / "link" / "out"), str(root / ".." / "x")):
            r = client.post("/jobs", json={"pass_dir": str(inside), "out_dir": out_dir})
            assert r.status_code in (400, 403), (out_dir, r.text)
        for settings in ({"model": "/etc/passwd"}, {"reference_image": str(outside / "manifest.json")},
                         {"loras": [{"path": "/usr/lib/x.safetensors"}]}):
            r = client.post("/jobs", json={"pass_dir": str(inside), "settings": settings})
            assert r.status_code == 403 and "outside" in r.json()["detail"], (settings, r.text)
        assert not (tmp_path / "elsewhere").exists()
        assert client.get("/jobs").json()["jobs"] == []
        # a legitimate request inside the root works
        r = client.post("/jobs", json={"pass_dir": str(inside), "out_dir": str(root / "out"), "settings": {"steps": 1}})
        assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    "name, entries, symlinks, status, reason",
    [
        ("zip-slip", {"../../evil.txt": b"x"}, {}, 400, "'..'"),
        ("zip-slip-nested", {"shot/../../evil.txt": b"x"}, {}, 400, "'..'"),
        ("absolute", {"/tmp/neurender-evil.txt": b"x"}, {}, 400, "absolute"),
        ("drive", {"C:/evil.txt": b"x"}, {}, 400, "absolute"),
        ("backslash", {"..\\evil.txt": b"x"}, {}, 400, "invalid name"),
        ("symlink", {}, {"shot/passes_0001.exr": "/etc/passwd"}, 400, "link"),
    ],
)
def test_unsafe_zips_are_refused(tmp_path, name, entries, symlinks, status, reason):
    app = create_app(make_config(tmp_path), runner=run_fake_render)
    data = pass_zip(tmp_path, extra=entries, symlinks=symlinks)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        r = upload(client, data)
        assert r.status_code == status, r.text
        assert reason in r.json()["detail"], r.text
        assert client.get("/jobs").json()["jobs"] == []
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/neurender-evil.txt").exists()
    jobs_dir = tmp_path / "data" / "jobs"
    assert list(jobs_dir.iterdir()) == []  # nothing left behind


def test_upload_limits(tmp_path):
    config = make_config(tmp_path, max_upload_bytes=64 * 1024, max_upload_files=5, max_unpacked_bytes=256 * 1024)
    app = create_app(config, runner=run_fake_render)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        r = upload(client, os.urandom(100 * 1024))  # body over the limit (Content-Length)
        assert r.status_code == 413 and "exceeds the limit" in r.json()["detail"]

        def chunks():  # streamed without Content-Length: counted as it arrives
            boundary = b"--b\r\n"
            yield boundary + b'Content-Disposition: form-data; name="file"; filename="p.zip"\r\n\r\n'
            for _ in range(40):
                yield os.urandom(4096)
            yield b"\r\n--b--\r\n"

        r = client.post("/jobs/upload", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
        assert r.status_code == 413, r.text

        many = pass_zip(tmp_path, extra={f"shot/f{i}.exr": b"" for i in range(10)})
        r = upload(client, many)
        assert r.status_code == 413 and "entries" in r.json()["detail"]

        bomb = pass_zip(tmp_path, extra={"shot/big.exr": b"\0" * (1024 * 1024)})  # compresses to ~1 KB
        assert len(bomb) < 64 * 1024
        r = upload(client, bomb)
        assert r.status_code == 413 and "unpacks to" in r.json()["detail"]

        r = upload(client, b"not a zip at all")
        assert r.status_code == 400 and "not a valid zip" in r.json()["detail"]
        r = upload(client, zip_bytes({"a/b/c.txt": b"x"}))
        assert r.status_code == 400 and "manifest.json" in r.json()["detail"]
        r = upload(client, pass_zip(tmp_path), settings='{"steps": ')
        assert r.status_code == 422 and "settings" in r.json()["detail"]
        assert client.get("/jobs").json()["jobs"] == []

        r = upload(client, pass_zip(tmp_path))  # a good upload still works
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        deadline = time.monotonic() + 10
        while client.get(f"/jobs/{job_id}").json()["state"] != "done":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert client.get(f"/jobs/{job_id}/frames/2").content.startswith(b"\x89PNG")


def test_token_required_and_checked(tmp_path):
    config = make_config(tmp_path, require_token=True)
    app = create_app(config, runner=run_fake_render)
    token_file = tmp_path / "data" / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 32
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        version = client.get("/version")
        assert version.status_code == 200 and version.json()["token_required"] is True
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"},
                        {"Authorization": "Bearer " + token[:-1]}, {"Authorization": "Bearer"}):
            for method, path in (("GET", "/jobs"), ("GET", "/jobs/x"), ("POST", "/jobs"), ("DELETE", "/jobs/x"),
                                 ("POST", "/models/free"), ("GET", "/nowhere")):
                r = client.request(method, path, headers=headers)
                assert r.status_code == 401, (headers, method, path, r.text)
                assert "token" in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
        good = {"Authorization": f"Bearer {token}"}
        assert client.get("/jobs", headers=good).status_code == 200
    # the same token is read back on the next start, not regenerated
    create_app(config, runner=run_fake_render)
    assert token_file.read_text().strip() == token


def test_token_file_rules_and_bind_policy(tmp_path):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("::")
    assert ServerConfig(host="0.0.0.0").token_required and not ServerConfig().token_required
    loose = tmp_path / "loose"
    loose.write_text("x" * 40)
    loose.chmod(0o644)
    with pytest.raises(TokenFileError, match="chmod 600"):
        load_or_create_token(loose)
    # a network bind without --root may only use the data folder
    resolved = ServerConfig(host="0.0.0.0", data_dir=tmp_path / "d").resolved()
    assert resolved.roots == [(tmp_path / "d").resolve()]


def test_browser_and_foreign_host_requests_are_refused(tmp_path):
    app = create_app(make_config(tmp_path), runner=run_fake_render)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        r = client.post("/jobs/upload", headers={"Origin": "http://evil.example"}, files={"file": ("a", b"x")})
        assert r.status_code == 403 and "web pages" in r.json()["detail"]
        r = client.get("/jobs", headers={"Host": "evil.example"})  # DNS rebinding
        assert r.status_code == 421
        assert client.get("/jobs", headers={"Host": f"localhost:{server.port}"}).status_code == 200


def test_network_bind_requires_a_token_on_every_request(tmp_path):
    config = make_config(tmp_path, host="0.0.0.0")  # the policy follows the configured bind address
    app = create_app(config, runner=run_fake_render)
    token = (tmp_path / "data" / "token").read_text().strip()
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/jobs").status_code == 401
        assert client.get("/jobs", headers={"Authorization": f"Bearer {token}x"}).status_code == 401
        ok = client.get("/jobs", headers={"Authorization": f"Bearer {token}", "Host": "gpu-box.studio:8765"})
        assert ok.status_code == 200  # no Host restriction once a token guards the server
        assert client.get("/version").json()["models"] == {}  # nothing about the machine without the token


def test_cli_builds_one_config_and_refuses_bad_token_file(tmp_path):
    from neurender.cli import build_parser
    from neurender.server.cli_serve import build_config, cmd_serve

    args = build_parser().parse_args(
        ["serve", "--data-dir", str(tmp_path / "d"), "--root", str(tmp_path), "--root", str(tmp_path / "x"),
         "--max-upload-mb", "3", "--require-token", "--token-file", str(tmp_path / "tok")]
    )
    assert args.func is cmd_serve
    config = build_config(args)
    assert config.host == "127.0.0.1" and config.token_required
    assert config.roots == [tmp_path.resolve(), (tmp_path / "x").resolve(), (tmp_path / "d").resolve()]
    assert config.max_upload_bytes == 3 * 1024**2 and config.token_file == (tmp_path / "tok").resolve()
    (tmp_path / "tok").write_text("y" * 40)
    (tmp_path / "tok").chmod(0o640)
    assert cmd_serve(args) == 2  # refused before binding anything
    bad = build_parser().parse_args(["serve", "--port", "70000", "--data-dir", str(tmp_path / "d")])
    assert cmd_serve(bad) == 2
    (tmp_path / "a-file").write_text("not a folder")
    assert cmd_serve(build_parser().parse_args(["serve", "--data-dir", str(tmp_path / "a-file")])) == 2
    newer = tmp_path / "newer"
    newer.mkdir()
    sqlite3.connect(newer / "jobs.sqlite3").execute("PRAGMA user_version=99").connection.close()
    assert cmd_serve(build_parser().parse_args(["serve", "--data-dir", str(newer)])) == 2

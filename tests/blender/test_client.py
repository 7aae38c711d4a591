"""The add-on's HTTP client and worker against the stub backend (no bpy): errors translated once."""

import socket
import threading

import pytest

from addon_modules import load
from stub_backend import StubBackend

client = load("client")
worker = load("worker")
contract = load("neurender_contract")


def test_version_and_token(stub):
    stub.token = "s3cret"
    info = client.Client(stub.url, "s3cret").check_version()
    assert info["protocol_version"] == contract.PROTOCOL_VERSION
    with pytest.raises(client.BackendError) as err:
        client.Client(stub.url, "wrong").jobs()
    assert err.value.kind == client.UNAUTHORIZED and "token" in str(err.value)


def test_unreachable_is_one_clear_sentence():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(client.BackendError) as err:
        client.Client(f"http://127.0.0.1:{port}", timeout=2).version()
    assert err.value.kind == client.UNREACHABLE
    assert f"at http://127.0.0.1:{port} cannot be reached" in str(err.value)
    assert "Connection refused" in err.value.detail  # the full reason stays for Copy Message and the log


def test_version_mismatch_refused_unless_forced():
    old = StubBackend(protocol=contract.PROTOCOL_VERSION + 1)
    url = old.start()
    try:
        with pytest.raises(client.BackendError) as err:
            client.Client(url).check_version()
        assert err.value.kind == client.VERSION_MISMATCH
        assert client.Client(url).check_version(force=True)["protocol_version"] == contract.PROTOCOL_VERSION + 1
    finally:
        old.stop()


def test_bad_settings_and_missing_model_are_classified(stub, tmp_path):
    c = client.Client(stub.url)
    with pytest.raises(client.BackendError) as err:
        c.submit(str(tmp_path), {"steps": 0}, "")
    assert err.value.kind == client.BAD_SETTINGS and "steps" in str(err.value) and err.value.status == 400
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(client.BackendError) as err:
        c.submit(str(tmp_path), {"model": str(tmp_path / "missing.safetensors")}, "")
    # the stub reads the manifest first; an invalid one is a pass-folder problem, named by the server's error_kind
    assert err.value.kind == "bad_pass_folder" and "schema version" in str(err.value)
    # a failed job is worded by its error_kind, never by sniffing words in its message
    assert client.job_failure_message({"error": "model /x/sd.safetensors not found",
                                       "error_kind": "model_missing"}).startswith("A model file set in the panel")
    assert not client.job_failure_message({"error": "model /x/sd.safetensors not found",
                                           "error_kind": "internal"}).startswith("A model file")


def test_worker_runs_callbacks_on_the_draining_thread():
    w = worker.Worker()
    seen = []
    w.submit(lambda: threading.get_ident(), lambda r, e: seen.append((r, e, threading.get_ident())))
    w.submit(lambda: 1 / 0, lambda r, e: seen.append((r, type(e).__name__, threading.get_ident())))
    while w.busy:
        w.drain()
    main = threading.get_ident()
    assert len(seen) == 2 and all(t == main for *_, t in seen)
    assert seen[0][0] != main  # the work itself ran elsewhere
    assert ("ZeroDivisionError" in [s[1] for s in seen])


def test_blocking_worker_runs_inline():
    w = worker.Worker(blocking=True)
    seen = []
    w.submit(lambda: threading.get_ident(), lambda r, e: seen.append(r))
    assert seen == [threading.get_ident()]


def test_a_stopped_watcher_posts_nothing_more():
    """A snapshot fetched while the watcher was being stopped (a newer job was submitted) is not delivered."""
    w = worker.Worker()
    in_fetch, release = threading.Event(), threading.Event()
    seen = []

    def fetch():
        in_fetch.set()
        release.wait(5)
        return {"id": "old", "state": "running"}

    watcher = worker.JobWatcher(w, fetch, lambda job, err: seen.append(job), interval=0.01)
    watcher.start()
    assert in_fetch.wait(5)
    watcher.stop()
    release.set()
    watcher._thread.join(5)
    assert not watcher._thread.is_alive()
    w.drain()
    assert seen == []


def test_a_server_that_does_not_speak_http_and_unknown_routes(stub):
    """A port answered by something else is one clear sentence, not a raw http.client traceback; a 404 is 'not
    found', whatever the detail says (the stub's unknown route says nothing about a job)."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]

        def answer_garbage():
            conn, _ = srv.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

        t = threading.Thread(target=answer_garbage, daemon=True)
        t.start()
        with pytest.raises(client.BackendError) as err:
            client.Client(f"http://127.0.0.1:{port}", timeout=5).version()
        t.join(5)
    assert err.value.kind == client.UNREACHABLE and f"127.0.0.1:{port}" in str(err.value)
    with pytest.raises(client.BackendError) as err:
        client.Client(stub.url)._request("POST", "/no/such/route", {})
    assert err.value.kind == client.NOT_FOUND and err.value.status == 404
    assert str(err.value) == "The backend does not know this job or frame (it may have been removed)."
    assert err.value.detail == "no such route"


def test_local_backend_restart_closes_the_old_log_and_reads_only_the_tail(tmp_path):
    backend_process = load("backend_process")
    exe = tmp_path / "env" / "bin" / "neurender"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\necho started\nexit 3\n")
    exe.chmod(0o755)
    local = backend_process.LocalBackend()
    data = tmp_path / "data"
    local.start(str(tmp_path / "env"), str(data), str(tmp_path))
    assert local.proc.wait(10) == 3
    first_log = local._log_file
    local.start(str(tmp_path / "env"), str(data), str(tmp_path))  # the child died: a new one is started
    assert first_log.closed and not local._log_file.closed
    local.proc.wait(10)
    with open(local.log_path, "ab") as f:
        f.write(b"x" * 200_000 + b"\nlast line\n")
    assert local.log_tail(2, max_bytes=1000).endswith("last line")
    assert len(local.log_tail(5, max_bytes=1000)) <= 1000
    local.stop()
    assert local._log_file is None
    exe.chmod(0o644)  # not executable: the log file is not left open either
    with pytest.raises(PermissionError):
        local.start(str(tmp_path / "env"), str(data), str(tmp_path))
    assert local._log_file is None

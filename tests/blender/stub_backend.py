"""A stand-in for ``neurender serve`` speaking the contract's HTTP API (stdlib only), for the add-on tests.

Jobs "render" by sleeping ``step_delay`` per step and writing a tiny PNG per frame; cancel stops at the next
step. Settings are checked with the contract; a model path that does not exist is refused like the real server,
and every error body carries the contract's ``error_kind``. With ``lockstep=True`` a job runs like the real runner:
all frames are denoised together (``phase`` loading, denoise with a live preview after every step, decode), the
frames are written at the end, and ``random_weights`` is reported when no checkpoint is set.
Runnable as ``python stub_backend.py serve --port P --data-dir D --root R`` (the fake local backend).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "backend", "neurender"))
import contract  # noqa: E402  (stdlib-only module, imported by path: no torch here)


def png_bytes(width: int, height: int, value: int) -> bytes:
    raw = b"".join(b"\x00" + bytes([value % 256, 128, 255 - value % 256]) * width for _ in range(height))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


class StubBackend:
    def __init__(self, protocol: int = contract.PROTOCOL_VERSION, step_delay: float = 0.01, token: str = "",
                 lockstep: bool = False):
        self.protocol = protocol
        self.step_delay = step_delay
        self.token = token
        self.lockstep = lockstep
        self.previews: dict[str, tuple[int, bytes]] = {}
        self.controls: dict[tuple[str, str, str], bytes] = {}  # (job id, kind, frame) -> PNG, lockstep mode
        self.freed = 0
        self.jobs: dict[str, dict] = {}
        self.cancel: dict[str, threading.Event] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.run_lock = threading.Lock()  # one job renders at a time, later ones wait queued (as neurender serve)
        self.server: ThreadingHTTPServer | None = None

    # -- job execution ---------------------------------------------------------------------------------
    def _run(self, job_id: str, manifest: "contract.PassManifest", settings: "contract.RenderSettings") -> None:
        job = self.jobs[job_id]
        frames = manifest.frame_numbers
        if settings.frames:
            a, b = contract.parse_frame_range(settings.frames)
            frames = [f for f in frames if a <= f <= b]
        with self.run_lock:
            if self.cancel[job_id].is_set():
                with self.lock:
                    job["state"] = contract.JOB_CANCELLED
                return
            self._render(job_id, job, frames, manifest, settings)

    def _render(self, job_id, job, frames, manifest, settings) -> None:
        os.makedirs(job["out_dir"], exist_ok=True)
        if self.lockstep:
            return self._run_lockstep(job_id, manifest, settings, frames)
        with self.lock:
            job["state"] = contract.JOB_RUNNING
            job["progress"].update(frames_total=len(frames), steps_total=settings.steps, phase="denoise")
        for i, frame in enumerate(frames):
            for step in range(settings.steps):
                if self.cancel[job_id].is_set():
                    with self.lock:
                        job["state"] = contract.JOB_CANCELLED
                        job["updated"] = time.time()
                    return
                time.sleep(self.step_delay)
                with self.lock:
                    job["progress"].update(step=step + 1, frames_done=i)
            path = os.path.join(job["out_dir"], contract.FRAME_FILE_PATTERN.format(frame=frame))
            with open(path + ".tmp", "wb") as f:
                f.write(png_bytes(manifest.width, manifest.height, frame * 20))
            os.replace(path + ".tmp", path)
            with self.lock:
                job["frames_done"].append(frame)
                job["progress"].update(frames_done=i + 1)
        with self.lock:
            job["state"] = contract.JOB_DONE
            job["updated"] = time.time()

    def _run_lockstep(self, job_id: str, manifest, settings, frames) -> None:
        """Like the runner: load, denoise every frame together (a preview per step), then decode and write."""
        job = self.jobs[job_id]

        def cancelled() -> bool:
            if self.cancel[job_id].is_set():
                with self.lock:
                    job["state"], job["error_kind"] = contract.JOB_CANCELLED, contract.ErrorKind.CANCELLED.value
                    job["updated"] = time.time()
                return True
            return False

        with self.lock:
            job["state"] = contract.JOB_RUNNING
            job["progress"].update(frames_total=len(frames), steps_total=settings.steps, phase="loading",
                                   device="cpu", dtype="float32", random_weights=not settings.model)
        time.sleep(self.step_delay)
        for unit in settings.controlnets:  # the control images it "derived" (kept in memory: served over HTTP)
            for i, frame in enumerate(frames):
                self.controls[(job_id, unit.kind, str(frame))] = png_bytes(12, 10, 60 * i + len(unit.kind))
        with self.lock:
            job["progress"].update(phase="denoise")
        for step in range(1, settings.steps + 1):
            if cancelled():
                return
            time.sleep(self.step_delay)
            self.previews[job_id] = (step, png_bytes(16, 8, step * 40))
            with self.lock:
                job["progress"].update(step=step, preview_step=step)
        with self.lock:
            job["progress"].update(phase="decode")
        for i, frame in enumerate(frames):
            if cancelled():
                return
            time.sleep(2 * self.step_delay)  # decoding a frame: long enough for a poll to see a partial strip
            path = os.path.join(job["out_dir"], contract.FRAME_FILE_PATTERN.format(frame=frame))
            with open(path + ".tmp", "wb") as f:
                f.write(png_bytes(manifest.width, manifest.height, frame * 20))
            os.replace(path + ".tmp", path)
            with self.lock:
                job["frames_done"].append(frame)
                job["progress"].update(frames_done=i + 1)
        with self.lock:
            job["progress"].update(phase="done")
            job["state"] = contract.JOB_DONE
            job["updated"] = time.time()

    def create_job(self, body: dict) -> tuple[int, dict]:
        try:
            settings = contract.RenderSettings.from_dict(body.get("settings", {}))
            pass_dir = body["pass_dir"]
            with open(os.path.join(pass_dir, contract.MANIFEST_NAME), encoding="utf-8") as f:
                manifest = contract.PassManifest.from_dict(json.load(f))
        except contract.ContractError as exc:
            return 400, {"detail": str(exc), "error_kind": exc.kind.value}
        except (KeyError, OSError) as exc:
            return 400, {"detail": f"pass folder not readable: {exc}", "error_kind": "bad_pass_folder"}
        if settings.model and not os.path.exists(settings.model):
            return 400, {"detail": f"model {settings.model} not found", "error_kind": "model_missing"}
        for unit in settings.controlnets:
            if not os.path.exists(unit.model):
                return 400, {"detail": f"controlnet model {unit.model} not found", "error_kind": "model_missing"}
        out_dir = body.get("out_dir") or os.path.join(pass_dir, "out")
        with self.lock:
            busy = [j["id"] for j in self.jobs.values() if j["state"] in (contract.JOB_QUEUED, contract.JOB_RUNNING)
                    and os.path.normpath(j["out_dir"]) == os.path.normpath(out_dir)]
        if busy:  # as neurender serve: an output folder is written by one job at a time
            return 409, {"detail": f"out_dir {out_dir} is in use by job {busy[0]}; cancel it or choose another",
                         "error_kind": "busy"}
        job_id = uuid.uuid4().hex[:12]
        now = time.time()
        progress = dict(contract.Progress().to_dict(), phase="queued")
        job = {"id": job_id, "state": contract.JOB_QUEUED, "progress": progress, "error": None, "error_kind": None,
               "created": now, "updated": now, "frames_done": [], "frame_start": manifest.frame_start,
               "frame_end": manifest.frame_end, "out_dir": out_dir,
               "settings": settings.to_dict()}
        self.jobs[job_id] = job
        self.cancel[job_id] = threading.Event()
        threading.Thread(target=self._run, args=(job_id, manifest, settings), daemon=True).start()
        return 201, job

    # -- HTTP --------------------------------------------------------------------------------------------
    def handler(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code, obj):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _auth(self):
                if stub.token and self.headers.get(contract.TOKEN_HEADER) != f"Bearer {stub.token}":
                    self._send(401, {"detail": "missing or wrong token", "error_kind": "token"})
                    return False
                return True

            def do_GET(self):
                stub.requests.append(("GET", self.path))
                if self.path.startswith("/html/"):  # stands in for another web server on the Backend URL
                    page = (b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body><h1>Not Found"
                            b"</h1><p>The requested URL was not found on this server.</p><hr><address>Apache/2.4"
                            b"</address></body></html>")
                    self.send_response(404)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return None
                if self.path == contract.ROUTE_VERSION:
                    return self._send(200, {"backend_version": "0.0-stub", "protocol_version": stub.protocol,
                                            "pass_schema_version": contract.PASS_SCHEMA_VERSION, "device": "cpu",
                                            "models": {}, "token_required": bool(stub.token)})
                if not self._auth():
                    return None
                if self.path == contract.ROUTE_JOBS:
                    with stub.lock:
                        return self._send(200, {"jobs": [json.loads(json.dumps(j)) for j in stub.jobs.values()]})
                parts = self.path.strip("/").split("/")
                if len(parts) == 2 and parts[0] == "jobs" and parts[1] in stub.jobs:
                    with stub.lock:
                        return self._send(200, json.loads(json.dumps(stub.jobs[parts[1]])))
                if (len(parts) == 5 and parts[0] == "jobs" and parts[2] == "controls"
                        and (parts[1], parts[3], parts[4]) in stub.controls):  # served, not on this disk
                    data = stub.controls[(parts[1], parts[3], parts[4])]
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return None
                if len(parts) == 3 and parts[0] == "jobs" and parts[2] == "preview" and parts[1] in stub.previews:
                    step, data = stub.previews[parts[1]]
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header(contract.PREVIEW_HEADER, str(step))
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return None
                return self._send(404, {"detail": f"job {self.path} not found", "error_kind": "not_found"})

            def do_POST(self):
                stub.requests.append(("POST", self.path))
                if not self._auth():
                    return None
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path == contract.ROUTE_JOBS:
                    return self._send(*stub.create_job(body))
                if self.path == contract.ROUTE_FREE:
                    stub.freed += 1
                    return self._send(200, {"freed": True})
                if self.path.startswith("/_pause?seconds="):  # tests: the backend goes away and comes back
                    seconds = float(self.path.split("=", 1)[1])
                    self._send(200, {"paused": seconds})
                    threading.Thread(target=stub.pause, args=(seconds,), daemon=True).start()
                    return None
                return self._send(404, {"detail": "no such route", "error_kind": "not_found"})

            def do_DELETE(self):
                stub.requests.append(("DELETE", self.path))
                if not self._auth():
                    return None
                parts = self.path.strip("/").split("/")
                if len(parts) == 2 and parts[1] in stub.jobs:
                    stub.cancel[parts[1]].set()
                    with stub.lock:
                        job = stub.jobs[parts[1]]
                        if job["state"] == contract.JOB_QUEUED:
                            job["state"] = contract.JOB_CANCELLED
                        return self._send(200, json.loads(json.dumps(job)))
                return self._send(404, {"detail": f"job {self.path} not found", "error_kind": "not_found"})

        return Handler

    def start(self, port: int = 0) -> str:
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self.handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def pause(self, seconds: float) -> None:
        """Stop listening for ``seconds`` (connections are refused), then listen on the same port again; jobs go on
        meanwhile, as a restarted ``neurender serve`` resumes them from its durable store."""
        port = self.server.server_address[1]
        self.stop()
        time.sleep(seconds)
        self.start(port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["serve"])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--data-dir")
    ap.add_argument("--root")
    ap.add_argument("--model-root", action="append", default=[])
    ap.add_argument("--exit-with-parent", type=int, default=0)
    args = ap.parse_args()
    if args.exit_with_parent:  # as neurender serve: gone when the Blender that started it is gone
        import parent_watch

        parent_watch.watch(args.exit_with_parent)
    stub = StubBackend(step_delay=float(os.environ.get("STUB_STEP_DELAY", "0.01")),
                       lockstep=bool(os.environ.get("STUB_LOCKSTEP")))
    stub.start(args.port)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A local ``neurender serve`` started by the add-on as a child process.

Started from the backend's own Python environment (``<env>/bin/neurender``), never inside Blender's Python.
Its log goes to a file in the extension's user directory; ``poll()`` tells when it died, ``stop()`` ends it
(also called on unregister and at interpreter exit) without waiting on the caller's thread: the process is asked
to stop (SIGTERM) and a daemon thread reaps it, killing it after a grace period. The backend is started with
``--exit-with-parent <Blender's pid>``, so it also exits when Blender dies without stopping it (a crash,
``kill -9``, a farm manager ending the job).
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Optional

log = logging.getLogger(__name__)


def executable(env_dir: str) -> str:
    """Path of the ``neurender`` console script inside a Python environment (venv or conda)."""
    env_dir = os.path.abspath(os.path.expanduser(env_dir))
    names = ("Scripts/neurender.exe", "Scripts/neurender") if sys.platform == "win32" else ("bin/neurender",)
    for name in names:
        path = os.path.join(env_dir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(  # the artist's words: the preference to fix, no shell command
        f"No neurender command in the Backend Python environment {env_dir!r} set in the preferences (expected "
        f"{os.path.join(env_dir, names[0])}); set it to the Python environment where the neurender backend is "
        "installed"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalBackend:
    def __init__(self) -> None:
        self.proc: Optional[subprocess.Popen] = None
        self.port = 0
        self.log_path = ""
        self._log_file = None
        self.exit_reported = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, env_dir: str, data_dir: str, root: str, port: int = 0, model_roots=()) -> str:
        """Start ``neurender serve``; returns its URL. A running one is reused. ``model_roots``: folders holding the
        models set in the preferences, allowed as model paths even outside ``root``."""
        if self.running:
            return self.url
        exe = executable(env_dir)
        os.makedirs(data_dir, exist_ok=True)
        self.port = port or free_port()
        self.log_path = os.path.join(data_dir, "serve.log")
        cmd = [exe, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", data_dir, "--root", root,
               "--exit-with-parent", str(os.getpid())]
        for folder in sorted({f for f in model_roots if f}):
            cmd += ["--model-root", folder]
        env = dict(os.environ)
        env.setdefault("HF_HUB_OFFLINE", "1")
        for var in ("PYTHONHOME", "PYTHONPATH"):  # Blender's own Python must not leak into the backend
            env.pop(var, None)
        if self._log_file is not None:  # still open from a child that died
            self._log_file.close()
        self._log_file = open(self.log_path, "ab")
        log.info("starting local backend: %s", " ".join(cmd))
        try:
            self.proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT, env=env, cwd=data_dir)
        except OSError:
            self._log_file.close()
            self._log_file = None
            raise
        self.exit_reported = False
        atexit.register(self._stop_at_exit)
        return self.url

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Wait until the port accepts connections; False if the process died or time ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.2)
        return False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def poll(self) -> Optional[int]:
        """The exit code if the child died, else None (also None when never started)."""
        return None if self.proc is None else self.proc.poll()

    def log_tail(self, lines: int = 5, max_bytes: int = 64 * 1024) -> str:
        """The last ``lines`` lines of the log (only its last ``max_bytes`` are read: the log grows across runs)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - max_bytes))
                return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0, wait: bool = False) -> None:
        """Ask the backend to stop; returns at once (``wait``: block up to ``timeout`` s, then kill, e.g. at exit).
        A backend still running after ``timeout`` is killed by the reaper thread."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            log.info("stopping local backend (pid %d)", proc.pid)
            try:
                proc.terminate()
            except OSError:  # already gone
                pass
            if wait:
                _reap(proc, timeout)
            else:
                threading.Thread(target=_reap, args=(proc, timeout), name="neurender-backend-reaper",
                                 daemon=True).start()
        if self._log_file is not None:
            self._log_file.close()  # the child keeps its own handle
            self._log_file = None
        try:
            atexit.unregister(self._stop_at_exit)
        except Exception:  # noqa: BLE001
            pass

    def _stop_at_exit(self) -> None:
        self.stop(timeout=2.0, wait=True)  # no UI any more; the parent watch covers a backend that ignores it


def _reap(proc: subprocess.Popen, timeout: float) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("local backend (pid %d) did not stop within %.0f s; killing it", proc.pid, timeout)
        proc.kill()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

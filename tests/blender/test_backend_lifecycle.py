"""A local backend started by the add-on exits when Blender dies, and stopping it never blocks Blender.

The Blender side is the add-on's own ``backend_process.LocalBackend`` (bpy-free) in a separate process; the backend
is the real ``neurender serve`` of this checkout (``--exit-with-parent``). Killing the Blender-side process with
SIGKILL (no atexit, no unregister) must take the backend down within a few seconds. Before the parent watch the
backend ran on, orphaned, until someone killed it.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BACKEND_PYTHON = os.path.join(REPO, ".venv", "bin", "python")


def _env_dir(tmp_path, body: str) -> str:
    """A 'backend Python environment' whose bin/neurender runs ``body`` (a shell command line)."""
    env = tmp_path / "env"
    (env / "bin").mkdir(parents=True, exist_ok=True)
    exe = env / "bin" / "neurender"
    exe.write_text("#!/bin/sh\n" + body + "\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(env)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie of ours is gone for every purpose
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(") ")[-1].split()[0] != "Z"
    except OSError:
        return True


BLENDER_SIDE = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {here!r})
    import addon_modules
    bp = addon_modules.load("backend_process")
    local = bp.LocalBackend()
    local.start({env!r}, {data!r}, {root!r})
    ok = local.wait_ready(90.0)
    print("CHILD", local.proc.pid, ok, flush=True)
    time.sleep(600)
""")


@pytest.mark.skipif(not os.path.isfile(BACKEND_PYTHON), reason="no backend environment (.venv)")
def test_backend_exits_when_blender_is_killed(tmp_path):
    backend = os.path.join(REPO, "backend")
    env = _env_dir(tmp_path, f'PYTHONPATH="{backend}" exec "{BACKEND_PYTHON}" -m neurender.cli "$@"')
    script = BLENDER_SIDE.format(here=HERE, env=env, data=str(tmp_path / "data"), root=str(tmp_path))
    blender = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                               env=dict(os.environ, HOME=str(tmp_path)))
    child = 0
    try:
        line = blender.stdout.readline()
        assert line.startswith("CHILD "), line
        child, ready = int(line.split()[1]), line.split()[2] == "True"
        assert ready and _alive(child)
        blender.kill()  # SIGKILL: no atexit, no unregister, nothing stops the backend but its own watch
        blender.wait(10)
        t0 = time.monotonic()
        while _alive(child) and time.monotonic() - t0 < 15:
            time.sleep(0.1)
        took = time.monotonic() - t0
        assert not _alive(child), "the backend outlived Blender by 15 s"
        assert took < 8.0, took
        print(f"backend gone {took:.1f} s after Blender was killed")
        log = open(tmp_path / "data" / "serve.log", encoding="utf-8").read()
        assert "is gone; stopping" in log, log[-2000:]
    finally:
        if blender.poll() is None:
            blender.kill()
        if child and _alive(child):
            os.kill(child, signal.SIGKILL)


def test_stop_returns_at_once_and_a_stubborn_backend_is_killed(tmp_path):
    import addon_modules

    bp = addon_modules.load("backend_process")
    port_file = tmp_path / "port"
    # a 'backend' that ignores SIGTERM and listens on the port it was given
    body = (f'exec "{sys.executable}" -c "import signal, socket, sys, time; signal.signal(signal.SIGTERM, '
            f'signal.SIG_IGN); s = socket.socket(); s.bind((\'127.0.0.1\', int(sys.argv[sys.argv.index(\'--port\') + 1]))); '
            f's.listen(); open(\'{port_file}\', \'w\').write(\'up\'); time.sleep(600)" "$@"')
    local = bp.LocalBackend()
    local.start(_env_dir(tmp_path, body), str(tmp_path / "data"), str(tmp_path))
    assert local.wait_ready(30.0)
    proc = local.proc
    t0 = time.monotonic()
    local.stop(timeout=1.0)
    assert time.monotonic() - t0 < 0.3  # Blender's UI thread is not held while the backend stops
    assert not local.running
    proc.wait(5.0)  # the reaper killed it after the 1 s grace period
    assert proc.returncode == -signal.SIGKILL

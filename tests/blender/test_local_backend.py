"""The add-on starts 'neurender serve' from a Python environment, detects its death and stops it on disable."""

import os
import stat
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def test_local_backend_lifecycle(run_scenario, tmp_path):
    env = tmp_path / "fake-env"
    (env / "bin").mkdir(parents=True)
    exe = env / "bin" / "neurender"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {os.path.join(HERE, 'stub_backend.py')} \"$@\"\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    r = run_scenario("local_backend", env=str(env))
    assert r["connect"] == "ok" and r["connected"] is True and r["version"] == "0.0-stub"
    assert r["url"].startswith("http://127.0.0.1:")
    assert "local backend exited" in r["died_error"] and r["died_connected"] is False
    assert r["restarted"] is True
    args = r["args"]  # the folders of the preferences' models are allowed as model paths on the local backend
    roots = [args[i + 1] for i, a in enumerate(args) if a == "--model-root"]
    assert roots == ["/models/controlnets", "/models/sd15"]
    i = args.index("--exit-with-parent")  # it exits when this Blender dies
    assert args[i + 1] == str(r["self_pid"])
    assert "CHILD_ALIVE_AFTER_DISABLE False" in r["_log"]


def test_missing_backend_env_is_reported(run_scenario, tmp_path):
    r = run_scenario("local_backend_missing", env=str(tmp_path / "no-env"))
    assert "No neurender command" in r["error"] and "no-env" in r["error"]

"""Defect 7: `blender -b shot.blend -a` on a farm node with 'Start a local backend' in the saved preferences starts
the local backend, renders the passes, runs the neural render, imports the frames, and exits 0; when the neural
render fails it exits non-zero (farm managers read exit codes). The .blend is moved to another folder between
saving and rendering, as a farm copies a project.

The bpy module has no `blender -b -a` command line, so a process running this Python loads the saved preferences,
opens the .blend and renders the animation (bpy.ops.render.render(animation=True)) exactly as -b -a does; its exit
code is whatever Blender and the add-on leave. The backend is the real `neurender serve` of this checkout, with a
tiny random-weight model. Before the change the hook said "press Connect" and the process exited 0.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from conftest import HERE, REPO

BACKEND_PYTHON = os.path.join(REPO, ".venv", "bin", "python")
pytestmark = pytest.mark.skipif(not os.path.isfile(BACKEND_PYTHON), reason="no backend environment (.venv)")
TINY = ("import sys; from neurender.models.random_models import build_random_model; "
        "build_random_model(sys.argv[1], size='tiny', control_kinds=('depth',), seed=0)")


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    """A backend environment running this checkout's `neurender serve`, and a tiny model (built once)."""
    root = tmp_path_factory.mktemp("farm")
    env = root / "backend-env"
    (env / "bin").mkdir(parents=True)
    exe = env / "bin" / "neurender"
    exe.write_text(f'#!/bin/sh\nPYTHONPATH="{os.path.join(REPO, "backend")}" exec "{BACKEND_PYTHON}" '
                   '-m neurender.cli "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    model = root / "models" / "tiny"
    subprocess.run([BACKEND_PYTHON, "-c", TINY, str(model)], check=True, capture_output=True, timeout=300,
                   env=dict(os.environ, PYTHONPATH=os.path.join(REPO, "backend"), HF_HUB_OFFLINE="1"))
    return {"root": root, "env": str(env), "model": str(model / "model"),
            "controlnet": str(model / "controlnet-depth")}


def _run(script: str, config: dict, tmp_path, timeout: float = 300.0):
    cfg = tmp_path / f"{os.path.basename(script)}.json"
    cfg.write_text(json.dumps(config))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HOME=str(tmp_path))
    proc = subprocess.run([sys.executable, os.path.join(HERE, "scenarios", script), str(cfg)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=str(tmp_path))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    log = proc.stdout + proc.stderr
    return proc.returncode, (json.loads(lines[-1][len("RESULT "):]) if lines else None), log


def _shot(backend, addon_zip, tmp_path, name: str, model: str = "") -> str:
    """Save the artist's preferences and shot in one folder, then move that folder; returns the moved .blend."""
    studio = tmp_path / f"{name}-studio"
    studio.mkdir()
    config = {"zip": addon_zip, "tmp": str(tmp_path / "blender"), "env": backend["env"], "root": str(tmp_path),
              "model": model or backend["model"], "controlnet": backend["controlnet"],
              "blend": str(studio / "shot.blend"), "out": str(studio / "unused")}
    code, result, log = _run("farm_setup.py", config, tmp_path)
    assert code == 0 and result is not None and result["output_dir"] == "//neurender/", log[-3000:]
    farm = tmp_path / f"{name}-farm-node"
    shutil.move(str(studio), str(farm))  # the project is copied to another folder (or machine)
    return str(farm / "shot.blend")


def test_headless_animation_render_starts_the_local_backend_and_imports(backend, addon_zip, tmp_path):
    blend = _shot(backend, addon_zip, tmp_path, "ok")
    code, r, log = _run("farm_render.py", {"tmp": str(tmp_path / "blender"), "blend": blend}, tmp_path)
    assert r is not None, log[-4000:]
    assert code == 0, (code, r, log[-4000:])
    assert r["enabled"] and r["state"] == "done" and r["error"] == "" and r["failure"] == "", r
    farm = os.path.dirname(blend)
    assert os.path.realpath(r["out_dir"]).startswith(os.path.realpath(farm)), r  # next to the moved .blend
    assert [(s["start"], s["end"], s["elements"]) for s in r["strip"]] == [(1, 2, 2)], r
    assert os.path.isfile(os.path.join(r["out_dir"], "frame_0002.png"))
    assert sorted(os.listdir(os.path.join(farm, "beauty"))) == ["frame_0001.png", "frame_0002.png"]  # the artist's
    assert "starting local backend" in log and "stopping local backend" in log


def test_headless_render_exits_non_zero_when_the_neural_render_fails(backend, addon_zip, tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")  # exists (the pre-flight passes), the backend cannot load it
    blend = _shot(backend, addon_zip, tmp_path, "bad", model=str(broken))
    code, r, log = _run("farm_render.py", {"tmp": str(tmp_path / "blender"), "blend": blend}, tmp_path)
    assert r is not None, log[-4000:]
    assert code == 3, (code, r, log[-4000:])
    assert r["state"] == "failed" and r["error"] and r["failure"] == r["error"], r
    assert r["strip"] == []
    assert "exit code 3" in log

"""Blender test helpers: build the extension zip once; run each Blender scenario in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "scripts"))
sys.path.insert(0, HERE)

pytestmark = pytest.mark.blender


@pytest.fixture(scope="session")
def addon_zip(tmp_path_factory):
    import build_extension

    return build_extension.build(str(tmp_path_factory.mktemp("dist")))


def run_blender_scenario(name: str, tmp_path, addon_zip: str, timeout: float = 180.0, **config) -> dict:
    """Run ``scenarios/<name>.py`` in a fresh bpy process; returns the dict it printed after ``RESULT``."""
    config.setdefault("out", str(tmp_path / "shot"))
    config.update(zip=addon_zip, tmp=str(tmp_path / "blender"))
    cfg = tmp_path / f"{name}.json"
    cfg.write_text(json.dumps(config))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HOME=str(tmp_path))
    proc = subprocess.run([sys.executable, os.path.join(HERE, "scenarios", f"{name}.py"), str(cfg)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=str(tmp_path))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise AssertionError(f"scenario {name} failed (exit {proc.returncode}):\n{tail}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["_log"] = proc.stdout + proc.stderr
    assert result["leftover_handlers"] == [], f"handlers left registered: {result['leftover_handlers']}"
    return result


@pytest.fixture
def run_scenario(addon_zip, tmp_path):
    def run(name: str, timeout: float = 180.0, **config):
        return run_blender_scenario(name, tmp_path, addon_zip, timeout, **config)

    return run


@pytest.fixture
def stub():
    from stub_backend import StubBackend

    backend = StubBackend()
    url = backend.start()
    backend.url = url
    yield backend
    backend.stop()

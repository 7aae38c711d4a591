"""``neurender render ... --motion-module PATH`` end to end (issue 14): the CLI, the settings, the HTTP API's path
rule, and the motion module composing with the in-iteration deflicker and the farm's chunks with shared anchors."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from PIL import Image

from neurender.cli import main
from neurender.contract import ContractError, ControlNetUnit, RenderSettings
from neurender.farm.anchors import compute_anchors
from neurender.farm.chunks import render_chunk
from neurender.farm.merge import merge_chunks
from neurender.models.cache import PipelineCache
from neurender.models.motion import random_motion_adapter
from neurender.models.random_models import SIZES

from support.animatediff_export import export_original
from support.synthetic_passes import write_synthetic_pass_folder

W, H = 64, 48
FRAMES = 6


@pytest.fixture(scope="module")
def passes(tmp_path_factory):
    path = tmp_path_factory.mktemp("passes")
    write_synthetic_pass_folder(path, frames=FRAMES, width=W, height=H, motion=(2.0, 0.0))
    return path


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    """The same random adapter as a MotionAdapter folder and as an original-layout single file."""
    root = tmp_path_factory.mktemp("mm")
    adapter = random_motion_adapter(SIZES["tiny"].unet, seed=4, positions=16)
    adapter.save_pretrained(root / "folder")
    return {"folder": root / "folder", "file": export_original(adapter, root / "mm_sd_v15_random.safetensors")}


def _flags(tiny, *extra):
    return ["--model", str(tiny.model), "--controlnet", f"depth={tiny.controlnets['depth']}", "--steps", "2",
            "--prompt", "a wooden toy", "--batch-size", "2", *extra]


def _frames(out, frames=range(1, FRAMES + 1)) -> np.ndarray:
    return np.stack([np.asarray(Image.open(out / f"frame_{f:04d}.png").convert("RGB"), dtype=np.float64)
                     for f in frames])


def test_cli_motion_module_file_and_folder_render_the_same_frames(tiny_model_dir, passes, modules, tmp_path):
    for name in ("file", "folder"):
        assert main(["render", str(passes), "--out", str(tmp_path / name), *_flags(tiny_model_dir),
                     "--motion-module", str(modules[name]), "--context-length", "4", "--context-overlap", "2"]) == 0
    assert main(["render", str(passes), "--out", str(tmp_path / "plain"), *_flags(tiny_model_dir)]) == 0
    file, folder, plain = _frames(tmp_path / "file"), _frames(tmp_path / "folder"), _frames(tmp_path / "plain")
    assert np.abs(file - folder).max() <= 1.0  # one grey level of float noise at most
    assert np.abs(file - plain).mean() > 1.0  # the motion module took part


def test_motion_module_with_two_controlnets_and_a_reference_image(tiny_model_dir, passes, modules, tmp_path):
    reference = tmp_path / "look.png"
    Image.fromarray((np.random.RandomState(3).rand(H, W, 3) * 255).astype(np.uint8)).save(reference)
    args = [*_flags(tiny_model_dir), "--controlnet", f"edges={tiny_model_dir.controlnets['edges']}@0.7",
            "--motion-module", str(modules["file"]), "--context-length", "4", "--context-overlap", "2",
            "--consistency", "first"]
    assert main(["render", str(passes), "--out", str(tmp_path / "ref"), *args, "--reference", str(reference)]) == 0
    assert main(["render", str(passes), "--out", str(tmp_path / "noref"), *args]) == 0
    assert np.abs(_frames(tmp_path / "ref") - _frames(tmp_path / "noref")).mean() > 0.1  # the reference took part


def test_cli_refuses_a_bad_motion_module_before_loading_any_model(tiny_model_dir, passes, tmp_path, caplog,
                                                                   monkeypatch):
    import neurender.plan as plan

    monkeypatch.setattr(plan, "load_models", lambda *a, **k: pytest.fail("a model was loaded"))
    bad = next((tiny_model_dir.model / "unet").glob("*.safetensors"))
    assert main(["render", str(passes), "--out", str(tmp_path / "x"), *_flags(tiny_model_dir),
                 "--motion-module", str(bad)]) == 2
    messages = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(messages) == 1 and "is not an AnimateDiff motion module" in messages[0]
    assert "Traceback" not in messages[0] and "\n" not in messages[0]
    assert not list((tmp_path / "x").glob("frame_*.png"))


def test_settings_fields_and_their_checks():
    s = RenderSettings.from_dict({"motion_module": "/m/mm_sd_v15_v2.ckpt", "context_length": 8, "context_overlap": 2})
    assert (s.motion_module, s.context_length, s.context_overlap) == ("/m/mm_sd_v15_v2.ckpt", 8, 2)
    assert RenderSettings().context_length == 16 and RenderSettings().context_overlap == 4
    for bad in ({"context_length": 1}, {"context_overlap": 16}, {"context_overlap": -1},
                {"motion_module": "/m/mm.ckpt", "consistency": "keyframes"},
                {"motion_module": "/m/mm.ckpt", "consistency": "window"}):
        with pytest.raises(ContractError):
            RenderSettings.from_dict(bad).check()


def test_motion_module_with_in_iteration_and_post_deflicker(tiny_model_dir, passes, modules, tmp_path):
    args = ["--motion-module", str(modules["file"]), "--context-length", "4", "--context-overlap", "2"]
    assert main(["render", str(passes), "--out", str(tmp_path / "mm"), *_flags(tiny_model_dir), *args]) == 0
    assert main(["render", str(passes), "--out", str(tmp_path / "deflicker"), *_flags(tiny_model_dir), *args,
                 "--deflicker-steps", "0", "--deflicker-space", "latent", "--post-deflicker"]) == 0
    plain, deflickered = _frames(tmp_path / "mm"), _frames(tmp_path / "deflicker")
    assert np.abs(plain - deflickered).mean() > 0.1  # the deflicker acted on the motion-module render


def test_motion_module_in_farm_chunks_with_shared_anchors(tiny_model_dir, passes, modules, tmp_path, monkeypatch):
    from neurender.engine.motion_windows import MotionWindows

    windows = []
    original = MotionWindows.noise_prediction
    monkeypatch.setattr(MotionWindows, "noise_prediction",
                        lambda self, s, latents, *a: windows.append(latents.shape[0]) or original(self, s, latents, *a))
    settings = dict(prompt="a wooden toy", steps=2, model=str(tiny_model_dir.model), batch_size=2,
                    consistency="first", motion_module=str(modules["file"]), context_length=4, context_overlap=2,
                    controlnets=[ControlNetUnit(kind="depth", model=str(tiny_model_dir.controlnets["depth"]))])
    cache = PipelineCache()
    anchors = compute_anchors(passes, tmp_path / "anchors", RenderSettings(**settings), count=2, pipelines=cache)
    out = tmp_path / "out"
    first = render_chunk(passes, out, RenderSettings(**settings, frames="1-3"), overlap=1, anchors=anchors.folder,
                         pipelines=cache)
    second = render_chunk(passes, out, RenderSettings(**settings, frames="4-6"), overlap=1, anchors=anchors.folder,
                          pipelines=cache)
    assert first.chunk.render == (1, 4) and second.chunk.render == (3, 6)
    assert windows == [4, 4, 4, 4]  # both chunks (2 steps each) went through the motion module
    merge_chunks(out, final=True)
    frames = _frames(out)
    assert frames.shape == (FRAMES, H, W, 3) and frames.std() > 1.0


def test_server_confines_the_motion_module_to_the_model_roots(tmp_path, monkeypatch):
    from neurender.server.app import create_app
    from neurender.server.config import ServerConfig
    from neurender.server.fake_runner import STEP_SECONDS_ENV, run_fake_render, write_fake_pass_folder
    from neurender.server.live import LiveServer

    monkeypatch.setenv(STEP_SECONDS_ENV, "0.001")
    root = tmp_path / "root"
    shot = write_fake_pass_folder(root / "shot", frames=1)
    config = ServerConfig(data_dir=tmp_path / "data", roots=[root], device="cpu")
    with LiveServer(create_app(config, runner=run_fake_render)) as server, \
            httpx.Client(base_url=server.url, timeout=10) as client:
        r = client.post("/jobs", json={"pass_dir": str(shot), "settings": {"motion_module": "/usr/lib/mm.ckpt"}})
        assert r.status_code == 403 and "motion module" in r.json()["detail"], r.text
        r = client.post("/jobs", json={"pass_dir": str(shot), "settings": {"context_overlap": 99}})
        assert r.status_code == 422, r.text
        inside = root / "mm_sd_v15_v2.ckpt"
        r = client.post("/jobs", json={"pass_dir": str(shot), "out_dir": str(root / "out"),
                                       "settings": {"steps": 1, "motion_module": str(inside), "context_length": 8}})
        assert r.status_code == 201, r.text
        assert r.json()["settings"]["motion_module"] == str(inside) and r.json()["settings"]["context_length"] == 8

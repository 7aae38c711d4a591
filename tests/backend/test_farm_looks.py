"""Looks (issue #7): a look saved from one shot renders a second shot with the same settings and the same anchors."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from neurender.cli import main
from neurender.contract import ControlNetUnit, RenderSettings
from neurender.errors import InputError
from neurender.farm.anchor_files import load_anchors
from neurender.farm.anchors import compute_anchors
from neurender.farm.chunks import render_chunk
from neurender.farm.looks import open_look, save_look
from neurender.models.cache import PipelineCache
from support.synthetic_passes import write_synthetic_pass_folder


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    root = tmp_path_factory.mktemp("shots")
    write_synthetic_pass_folder(root / "shot1", frames=6, width=64, height=48, motion=(2.0, 0.0))
    write_synthetic_pass_folder(root / "shot2", frames=5, width=64, height=48, motion=(0.0, 1.0))
    return root / "shot1", root / "shot2"


def _settings(tiny, **kw) -> RenderSettings:
    base = dict(prompt="a wooden toy, watercolour", negative_prompt="blurry", seed=11, steps=3, model=str(tiny.model),
                batch_size=4, consistency="first+prev",
                controlnets=[ControlNetUnit(kind="depth", model=str(tiny.controlnets["depth"]), weight=0.8)])
    base.update(kw)
    return RenderSettings(**base)


def test_two_shots_rendered_with_one_look_share_their_anchors(tiny_model_dir, shots, tmp_path, monkeypatch):
    monkeypatch.setenv("NEURENDER_CACHE", str(tmp_path / "cache"))
    shot1, shot2 = shots
    cache = PipelineCache()
    reference = tmp_path / "style.png"
    Image.fromarray(np.full((48, 64, 3), (200, 90, 30), np.uint8)).save(reference)
    settings = _settings(tiny_model_dir, reference_image=str(reference))
    anchors = compute_anchors(shot1, tmp_path / "anchors1", settings, count=2, pipelines=cache)
    look_file = save_look(tmp_path / "toy.nrlook", settings, anchors=anchors.folder, name="toy")
    # the same inputs give the same look file, byte for byte
    again = save_look(tmp_path / "again.nrlook", settings, anchors=anchors.folder, name="toy")
    assert again.read_bytes() == look_file.read_bytes()

    look = open_look(look_file, cache_dir=tmp_path / "looks")
    assert look.name == "toy" and look.anchors is not None
    for name in ("prompt", "negative_prompt", "seed", "steps", "model", "controlnets", "consistency"):
        assert getattr(look.settings, name) == getattr(settings, name), name
    assert open(look.settings.reference_image, "rb").read() == reference.read_bytes()  # extracted with the look

    results = []
    for shot in (shot1, shot2):
        out = tmp_path / f"out-{shot.name}"
        results.append(render_chunk(shot, out, look.settings, anchors=look.anchors, pipelines=cache))
        assert len(list(out.glob("frame_*.png"))) == (6 if shot is shot1 else 5)
    assert results[0].anchors_digest == results[1].anchors_digest == anchors.digest
    assert load_anchors(look.anchors, look.settings).data.latents.equal(anchors.data.latents)

    # the anchors matter: shot 2 without the look's anchors renders differently
    plain = render_chunk(shot2, tmp_path / "plain", look.settings, pipelines=cache)
    assert plain.anchors_digest == ""
    with_look = {p.name: p.read_bytes() for p in (tmp_path / f"out-{shot2.name}").glob("frame_*.png")}
    assert with_look != {p.name: p.read_bytes() for p in (tmp_path / "plain").glob("frame_*.png")}


def test_look_cli_save_show_and_render(tiny_model_dir, shots, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NEURENDER_CACHE", str(tmp_path / "cache"))
    shot1, shot2 = shots
    flags = ["--model", str(tiny_model_dir.model), "--controlnet", f"depth={tiny_model_dir.controlnets['depth']}",
             "--steps", "2", "--prompt", "a toy", "--seed", "3"]
    assert main(["anchors", str(shot1), "--out", str(tmp_path / "a"), "--count", "1", *flags]) == 0
    assert main(["look", "save", str(tmp_path / "toy.nrlook"), "--anchors", str(tmp_path / "a"), *flags]) == 0
    capsys.readouterr()
    assert main(["look", "show", str(tmp_path / "toy.nrlook")]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["settings"]["seed"] == 3 and shown["anchors"]
    assert main(["render", str(shot2), "--out", str(tmp_path / "o2"), "--look", str(tmp_path / "toy.nrlook"),
                 "--progress", "json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["written"] == [1, 2, 3, 4, 5] and summary["anchors"]
    # flags override the look; an incompatible override of the timesteps is refused (exit code 2)
    assert main(["render", str(shot2), "--out", str(tmp_path / "o3"), "--look", str(tmp_path / "toy.nrlook"),
                 "--steps", "3"]) == 2


def test_broken_look_files_are_clear_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_look(tmp_path / "nope.nrlook")
    (tmp_path / "bad.nrlook").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a neurender look"):
        open_look(tmp_path / "bad.nrlook")
    with zipfile.ZipFile(tmp_path / "evil.nrlook", "w") as zf:
        zf.writestr("look.json", json.dumps({"version": 1, "name": "x", "settings": {"steps": 2}}))
        zf.writestr("../escape.txt", "x")
    look = open_look(tmp_path / "evil.nrlook", cache_dir=tmp_path / "looks")
    assert look.settings.steps == 2 and look.anchors is None
    assert not (tmp_path / "escape.txt").exists() and not list((tmp_path / "looks").rglob("escape.txt"))

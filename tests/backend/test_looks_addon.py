"""Look files written by the Blender add-on (blender_addon/looks.py, standard library only) are the backend's look
files (neurender.farm.looks): each side reads what the other writes, settings and reference image included."""

from __future__ import annotations

import sys
from pathlib import Path

from neurender.contract import LoraSpec, RenderSettings
from neurender.farm.looks import open_look, save_look

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "blender"))
from addon_modules import load  # noqa: E402

addon_looks = load("looks")
addon_contract = load("neurender_contract")


def test_addon_look_opens_in_the_backend_and_back(tmp_path):
    ref = tmp_path / "ref.png"
    ref.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 40)
    settings = addon_contract.RenderSettings(prompt="a brass owl", seed=77, steps=12, reference_image=str(ref),
                                             loras=[addon_contract.LoraSpec(path="/m/style.safetensors", weight=0.7)])
    path = addon_looks.save(str(tmp_path / "owl"), settings, name="owl")
    look = open_look(path, cache_dir=tmp_path / "cache")
    assert look.name == "owl" and look.settings.prompt == "a brass owl" and look.settings.seed == 77
    assert look.settings.loras == [LoraSpec(path="/m/style.safetensors", weight=0.7)]
    assert Path(look.settings.reference_image).read_bytes() == ref.read_bytes()

    back = save_look(tmp_path / "back.nrlook", RenderSettings(prompt="a tin robot", reference_image=str(ref)))
    name, data = addon_looks.load(str(back), str(tmp_path / "extract"))
    assert name == "back" and data["prompt"] == "a tin robot"
    assert Path(data["reference_image"]).read_bytes() == ref.read_bytes()

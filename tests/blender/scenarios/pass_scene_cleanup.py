"""Scenario: after a pass render no render engine outlives the removed temporary scene (the bpy 5.0 segfault)."""

import gc
import os
import sys

import common

config, mod = common.start(sys.argv[1])
import bpy  # noqa: E402
import scenes  # noqa: E402


def live_engines() -> list:
    gc.collect()
    return [type(o).__name__ for o in gc.get_objects() if isinstance(o, bpy.types.RenderEngine)]


scene = scenes.build(frames=3, samples=1)
scene.neurender.output_dir = config["out"]
out = {"engines": []}
for first, last in ((1, 2), (2, 3)):
    mod.pass_export.export_passes(scene, first, last)  # the fast pass-only render keeps persistent data
    out["engines"].append(live_engines())
    png = os.path.join(config["out"], f"still_{first}.png")
    img = bpy.data.images.new(f"still_{first}", 8, 8)
    img.filepath_raw, img.file_format = png, "PNG"
    img.save()
    se = scene.sequence_editor or scene.sequence_editor_create()
    se.strips.new_image(name=f"s{first}", filepath=png, channel=first, frame_start=1)  # a relations update
out["scenes"] = sorted(s.name for s in bpy.data.scenes)
common.finish(out)

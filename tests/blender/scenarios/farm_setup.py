"""Scenario: an artist saves the preferences ('Start a local backend', models) and a shot with the render hook on
and the default relative output folder (//neurender/), as a .blend for a farm's `blender -b shot.blend -a`."""

import sys

import common

config, mod = common.start(sys.argv[1])
import bpy  # noqa: E402
import scenes  # noqa: E402

prefs = mod.preferences.get()
prefs.start_local = True
prefs.backend_env = config["env"]
prefs.backend_root = config["root"]
prefs.sd_model = config["model"]
prefs.controlnet_depth = config["controlnet"]
bpy.ops.wm.save_userpref()  # what Blender on the farm node loads at start-up

scene = scenes.build(frames=2, samples=1, width=64, height=48)
shot = scene.neurender
shot.steps = 1
shot.render_hook = True
shot.controlnets.add().kind = "depth"  # model from the preferences
scene.render.filepath = "//beauty/frame_"  # the artist's own output, next to the .blend
scene.render.image_settings.file_format = "PNG"
bpy.ops.wm.save_as_mainfile(filepath=config["blend"])
common.finish({"output_dir": shot.output_dir})

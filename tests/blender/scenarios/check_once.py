"""Scenario: how often the add-on checks the render settings for one job (issue 13: once per process boundary) when
the artist presses Render Animation, Render This Frame, or renders the animation with the render hook on."""

import os
import sys

import common

config, mod = common.start(sys.argv[1])
import bpy  # noqa: E402
import scenes  # noqa: E402

scene = scenes.build(frames=2, samples=1, width=32, height=24)
mod.preferences.get().backend_url = config["url"]
shot = scene.neurender
shot.output_dir = config["out"]
shot.steps = 2
scene.render.filepath = os.path.join(config["tmp"], "artist", "beauty_")
scene.render.image_settings.file_format = "PNG"
status = bpy.context.window_manager.neurender

Settings = mod.neurender_contract.RenderSettings
calls = []
original = Settings.check


def counting(self):
    calls.append(1)
    return original(self)


Settings.check = counting
out = {}
for name, action in (("animation", lambda: bpy.ops.neurender.render_animation()),
                     ("frame", lambda: bpy.ops.neurender.render_frame()),
                     ("hook", lambda: (setattr(shot, "render_hook", True), bpy.ops.render.render(animation=True)))):
    calls.clear()
    action()
    shot.render_hook = False
    out[name] = {"checks": len(calls), "state": status.job_state, "error": status.error}
common.finish(out)

"""Scenario: the render hook on an ordinary animation render, then the VSE strip; re-run replaces it."""

import sys

import common

config, mod = common.start(sys.argv[1])
import bpy  # noqa: E402
import scenes  # noqa: E402

compat = mod.compat
scene = scenes.build(frames=4, samples=2)
prefs = mod.preferences.get()
prefs.backend_url = config["url"]
shot = scene.neurender
shot.output_dir = config["out"]
shot.prompt = "a tin robot"
shot.steps = 3
own_output = scene.render.filepath

se = scene.sequence_editor_create()
try:
    artist = compat.strips(se).new_effect(name="artist", type="COLOR", channel=1, frame_start=1, frame_end=11)
except TypeError:  # 5.0: length instead of frame_end
    artist = compat.strips(se).new_effect(name="artist", type="COLOR", channel=1, frame_start=1, length=10)

messages = []
orig = mod.session.set_message
mod.session.set_message = lambda text, error="": (messages.append(error or text), orig(text, error))[1]

own_format = scene.render.image_settings.file_format
scene.render.use_motion_blur = True  # the artist's own settings, which neurender must leave alone
scene.render.use_sequencer = True
layer_passes = (scene.view_layers[0].use_pass_z, scene.view_layers[0].use_pass_vector)
shot.render_hook = True
configured = {"filepath": scene.render.filepath, "format": scene.render.image_settings.file_format}
bpy.ops.render.render()  # a still render (F12) with the hook on: nothing is sent
still_jobs = bpy.context.window_manager.neurender.job_id


def strips():
    return [{"name": s.name, "channel": s.channel, "start": s.frame_final_start, "end": s.frame_final_end,
             "elements": [e.filename for e in s.elements] if hasattr(s, "elements") else [],
             "directory": getattr(s, "directory", ""), "ours": bool(s.get("neurender"))}
            for s in compat.all_strips(se)]


bpy.ops.render.render(animation=True)
first = strips()
status = bpy.context.window_manager.neurender
first_status = {"state": status.job_state, "error": status.error, "out_dir": status.out_dir}

scene.frame_start = 2
shot.make_movie = True
bpy.ops.render.render(animation=True)
second = strips()
second_out = status.out_dir
gap = [e.filename for e in mod.vse.place_result(scene, status.out_dir, [4, 2]).elements]  # frame 3 missing
shot.render_hook = False
common.finish({"second_out": second_out, "gap": gap, "scenes": [s.name for s in bpy.data.scenes], "first": first, "second": second, "status": first_status, "messages": messages,
               "configured": configured, "restored_filepath": scene.render.filepath, "own_output": own_output,
               "restored_format": scene.render.image_settings.file_format,
               "restored_use_sequencer": scene.render.use_sequencer, "own_format": own_format,
               "still_jobs": still_jobs, "motion_blur": scene.render.use_motion_blur,
               "layer_passes_before": layer_passes,
               "layer_passes_after": (scene.view_layers[0].use_pass_z, scene.view_layers[0].use_pass_vector), "passes_on_disk": sorted(
                   __import__("os").listdir(mod.pass_export.pass_dir(scene, 2)))})

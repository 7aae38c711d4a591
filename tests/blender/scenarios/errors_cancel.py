"""Scenario: error reports (unreachable, version mismatch, bad settings, model missing), progress and cancel."""

import sys
import time

import common

config, mod = common.start(sys.argv[1])
import bpy  # noqa: E402
import scenes  # noqa: E402

scene = scenes.build(frames=3, samples=1)
prefs = mod.preferences.get()
status = bpy.context.window_manager.neurender
shot = scene.neurender
shot.output_dir = config["out"]
shot.steps = 4
out = {}


def op_error(op, **kw):
    try:
        result = op(**kw)
        return {"result": sorted(result), "error": status.error}
    except RuntimeError as exc:
        return {"result": ["RuntimeError"], "error": str(exc)}


prefs.backend_url = config["closed_url"]
out["unreachable"] = op_error(bpy.ops.neurender.connect)
out["unreachable_connected"] = status.connected
prefs.backend_url = config["old_url"]
out["mismatch"] = op_error(bpy.ops.neurender.connect)
prefs.backend_url = config["url"]
out["ok"] = op_error(bpy.ops.neurender.connect)
out["ok_connected"] = status.connected
out["ok_info"] = status.backend_info

shot.deflicker_steps = "1, 9"
out["bad_settings"] = op_error(bpy.ops.neurender.render_frame)
shot.deflicker_steps = ""
shot.model = config["missing_model"]
out["model_missing"] = op_error(bpy.ops.neurender.render_frame)
shot.model = ""
camera, scene.camera = scene.camera, None  # a pass render that cannot happen is one clear report, not a traceback
out["no_camera"] = op_error(bpy.ops.neurender.render_frame)
scene.camera = camera

# the artist cancels the pass render of a hooked Render Animation: told so, and the 'rendering passes' state ends
status.job_id, status.job_state = "", "rendering passes"
shot.render_hook = True
mod.handlers.on_render_init(scene)
mod.handlers.on_render_cancel(scene)
shot.render_hook = False
out["render_cancelled"] = {"state": status.job_state, "message": status.message, "jobs": len(status.job_id)}

# progress while waiting: every snapshot becomes a status message
messages = []
orig = mod.session.set_message
mod.session.set_message = lambda text, error="": (messages.append(error or text), orig(text, error))[1]
scene.frame_set(2)
out["frame"] = op_error(bpy.ops.neurender.render_frame)
out["frame_state"] = status.job_state
out["progress_messages"] = [m for m in messages if "step" in m]

# cancel: submit without waiting, cancel, then poll the job
shot.steps = 30
mod.pass_export.export_passes(scene, 1, 3)
mod.session.submit_job(scene, 1, 3, wait=False)
job_id = status.job_id
time.sleep(0.4)
out["cancel"] = op_error(bpy.ops.neurender.cancel)
client = mod.session.make_client()
deadline = time.time() + 20
job = client.job(job_id)
while job["state"] not in ("done", "failed", "cancelled") and time.time() < deadline:
    time.sleep(0.1)
    job = client.job(job_id)
out["cancelled_job"] = job
common.finish(out)

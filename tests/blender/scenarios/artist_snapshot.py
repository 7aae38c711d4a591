"""Scenario: an artist's own scene (motion blur, own output path/format, production samples, own strip); F12, Ctrl+F12,
the panel's Render Animation and Render This Frame mixed; a generic RNA snapshot of the scene before and after."""

import importlib
import sys

import common

config, mod = common.start(sys.argv[1])
import bpy  # noqa: E402
import scenes  # noqa: E402
import rna_snapshot  # noqa: E402

compat = mod.compat
scene = scenes.build(frames=3, samples=2)
prefs = mod.preferences.get()
prefs.backend_url = config["url"]
shot = scene.neurender
shot.output_dir = config["out"]
shot.prompt = "a tin robot"
shot.steps = 2

# the artist's own, non-default settings
scene.render.use_motion_blur = True
scene.render.motion_blur_shutter = 0.7
scene.render.filepath = config["out"] + "/artist/beauty_"
scene.render.image_settings.file_format = "JPEG"
scene.render.image_settings.quality = 83
scene.render.use_sequencer = True
scene.cycles.samples = 2
scene.cycles.use_denoising = True
se = scene.sequence_editor_create()
try:
    compat.strips(se).new_effect(name="artist", type="COLOR", channel=1, frame_start=1, frame_end=11)
except TypeError:  # 5.0: length instead of frame_end
    compat.strips(se).new_effect(name="artist", type="COLOR", channel=1, frame_start=1, length=10)

SKIP = {"rna_type", "neurender", "frame_current", "frame_current_final", "frame_float", "frame_subframe",
        "is_evaluated", "original", "depsgraph", "active_layer_collection", "layer_collection", "users", "session_uid", "is_dirty", "sequence_editor", "tag"}


def snap(obj):
    return rna_snapshot.snap(obj, SKIP, max_depth=2)  # exact floats; deeper reads crashed bpy after a render


def whole():
    return {"render": snap(scene.render), "cycles": snap(scene.cycles),
            "view_layers": [snap(v) for v in scene.view_layers], "display": snap(scene.display_settings),
            "view": snap(scene.view_settings), "world": scene.world.name if scene.world else None,
            "camera": scene.camera.name, "range": [scene.frame_start, scene.frame_end],
            "strips": sorted((s.name, s.channel, s.frame_final_start, s.frame_final_end)
                             for s in compat.all_strips(se) if not s.get("neurender"))}


diff = rna_snapshot.diff


before = whole()
changes = {}
shot.render_hook = True
bpy.ops.render.render()  # F12
changes["F12"] = diff(before, whole())
bpy.ops.render.render(animation=True)  # Ctrl+F12
changes["Ctrl+F12"] = diff(before, whole())
hook_after_ops = []
for name in ("render_animation", "render_frame"):
    op = getattr(bpy.ops.neurender, name, None)
    if op is None:
        changes[name] = ["operator missing"]
        continue
    try:
        op()
    except RuntimeError as e:  # a refusal is reported, not a change
        changes.setdefault("refused", []).append(f"{name}: {e}")
    changes[name] = diff(before, whole())
    hook_after_ops.append(shot.render_hook)
# the panel's other buttons (issue 11) leave the artist's scene alone too
shot.look_file = config["out"] + "/look.nrlook"
for name, kw in (("connect", {}), ("free_vram", {}), ("add_suggested_controls", {}), ("apply_preset", {"preset": "FAST"}),
                 ("lora_add", {}), ("lora_remove", {"index": 0}), ("look_save", {}), ("look_apply", {}),
                 ("show_preview", {}), ("show_controls", {}), ("copy_message", {}), ("open_log", {})):
    try:
        getattr(bpy.ops.neurender, name)(**kw)
    except RuntimeError as e:  # a refusal is reported, not a change
        changes.setdefault("refused", []).append(f"{name}: {e}")
    changes[name] = diff(before, whole())
shot.controlnets.clear()  # the shot as before those buttons (units without models would stop the next render)
shot.steps, shot.scheduler, shot.guidance_scale, shot.deflicker_preset = 2, "dpmpp_2m", 7.5, "STANDARD"
bpy.ops.render.render(animation=True)  # a second Ctrl+F12
changes["second Ctrl+F12"] = diff(before, whole())
shot.render_hook = False

# the job actions (issue 10): import a finished job again, open its folder, cancel a running one from its Jobs row,
# reattach (as after a file load), disable + re-enable the extension mid-job
import time  # noqa: E402

import addon_env  # noqa: E402
import addon_utils  # noqa: E402

first = scene.neurender_jobs[0]
for name, kw in (("job_import", {"key": first.key}), ("job_open_folder", {"key": first.key})):
    try:
        getattr(bpy.ops.neurender, name)(**kw)
    except RuntimeError as e:  # e.g. no file browser headless: a refusal is reported, not a change
        changes.setdefault("refused", []).append(f"{name}: {e}")
    changes[name] = diff(before, whole())
mod.session.state().worker = mod.worker.Worker(blocking=False)  # the UI's threads, driven like its timer
shot.steps = 150


def pump_until(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not cond():
        mod.session.pump()
        time.sleep(0.05)
    return cond()


bpy.ops.neurender.render_frame()
running = pump_until(lambda: scene.neurender_jobs[-1].state == "running")
mod.session.reattach_all()
changes["reattach"] = diff(before, whole())
addon_utils.disable(addon_env.MODULE, default_set=True)
addon_utils.enable(addon_env.MODULE, default_set=True)
mod = importlib.import_module(addon_env.MODULE)
mod.preferences.get().backend_url = config["url"]
mod.session.state().worker = mod.worker.Worker(blocking=False)
mod.session.pump()  # the first pump after register reattaches
changes["disable + enable"] = diff(before, whole())
bpy.ops.neurender.job_cancel(key=scene.neurender_jobs[-1].key)
cancelled = pump_until(lambda: scene.neurender_jobs[-1].state == "cancelled")
changes["job_cancel"] = diff(before, whole())
job_actions = {"running": running, "cancelled": cancelled, "records": len(scene.neurender_jobs),
               "watchers": len(mod.session.state().watchers)}
common.finish({"job_actions": job_actions, "changes": changes, "hook_after_ops": hook_after_ops, "scenes": [s.name for s in bpy.data.scenes]})

"""Scenario: every pre-flight failure, through Render This Frame, Render Animation and the render hook (a real
Ctrl+F12-style animation render): the sentence reported, pass files written, jobs sent."""

import glob
import os
import sys

import common

config, mod = common.start(sys.argv[1])
import bpy  # noqa: E402
import scenes  # noqa: E402

scene = scenes.build(frames=2, samples=1, width=32, height=24)
prefs = mod.preferences.get()
status = bpy.context.window_manager.neurender
shot = scene.neurender
shot.output_dir = config["out"]
shot.steps = 2
scene.render.filepath = os.path.join(config["tmp"], "artist", "beauty_")  # the artist's own output (hook case)
scene.render.image_settings.file_format = "PNG"


def pass_files() -> list:
    return sorted(os.path.relpath(p, config["out"])
                  for p in glob.glob(os.path.join(config["out"], "**", "*.exr"), recursive=True))


def op(fn):
    try:
        fn()
    except RuntimeError as exc:  # an operator's ERROR report: "Error: <sentence>\n"
        return str(exc).strip()
    return status.error


def hooked_animation():
    shot.render_hook = True
    try:
        bpy.ops.render.render(animation=True)  # the artist's Ctrl+F12 / blender -b -a
    finally:
        shot.render_hook = False
    headless = getattr(mod, "headless", None)  # (absent before the pre-flight change)
    failure = headless.failure() if headless else ""  # -b -a exits non-zero with this reason
    if headless:
        headless.reset()
    return status.error if failure == status.error else f"exit-code reason {failure!r} != {status.error!r}"


ACTIONS = {
    "frame": lambda: op(bpy.ops.neurender.render_frame),
    "animation": lambda: op(bpy.ops.neurender.render_animation),
    "hook": hooked_animation,
}


def case(name, setup, undo):
    setup()
    try:
        out[name] = {}
        for action, run in ACTIONS.items():
            before = set(pass_files())
            error = run()
            out[name][action] = {"error": error, "passes": sorted(set(pass_files()) - before),  # written by it
                                 "state": status.job_state}
    finally:
        undo()


out = {}
prefs.backend_url = config["url"]
camera = scene.camera
file_path = os.path.join(config["tmp"], "a-file")
open(file_path, "w").close()
cases = [
    ("unreachable", lambda: setattr(prefs, "backend_url", config["closed_url"]),
     lambda: setattr(prefs, "backend_url", config["url"])),
    ("mismatch", lambda: setattr(prefs, "backend_url", config["old_url"]),
     lambda: setattr(prefs, "backend_url", config["url"])),
    ("model_missing", lambda: setattr(shot, "model", config["missing_model"]), lambda: setattr(shot, "model", "")),
    ("controlnet_missing", lambda: setattr(shot.controlnets.add(), "model", config["missing_model"] + ".cn"),
     lambda: shot.controlnets.remove(0)),
    ("output_unwritable", lambda: setattr(shot, "output_dir", os.path.join(file_path, "sub")),
     lambda: setattr(shot, "output_dir", config["out"])),
    ("no_camera", lambda: setattr(scene, "camera", None), lambda: setattr(scene, "camera", camera)),
    ("too_many_frames", lambda: setattr(scene, "frame_end", 20001), lambda: setattr(scene, "frame_end", 2)),
    ("too_small", lambda: setattr(scene.render, "resolution_percentage", 10),
     lambda: setattr(scene.render, "resolution_percentage", 100)),
    ("bad_settings", lambda: setattr(shot, "deflicker_steps", "1, 9"), lambda: setattr(shot, "deflicker_steps", "")),
    ("outside_allowed_root", lambda: (setattr(prefs, "start_local", True), setattr(prefs, "backend_env", config["env"]),
                                      setattr(prefs, "backend_root", config["elsewhere"])),
     lambda: (setattr(prefs, "start_local", False), setattr(prefs, "backend_root", ""))),
    ("local_not_startable", lambda: (setattr(prefs, "start_local", True), setattr(prefs, "backend_env", config["env"])),
     lambda: setattr(prefs, "start_local", False)),
]
for name, setup, undo in cases:
    if name in ("too_many_frames", "no_camera"):  # 20001 real frames take long; Blender refuses no camera itself
        saved = dict(ACTIONS)
        ACTIONS.pop("hook")
        if name == "too_many_frames":  # Render This Frame renders one frame whatever the range
            ACTIONS.pop("frame")
        case(name, setup, undo)
        ACTIONS.update(saved)
    else:
        case(name, setup, undo)

# and everything in order: the frame renders and is sent
before = set(pass_files())
out["ok"] = {"error": op(bpy.ops.neurender.render_frame), "passes": sorted(set(pass_files()) - before),
             "state": status.job_state}
common.finish(out)

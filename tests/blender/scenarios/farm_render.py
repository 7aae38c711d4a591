"""Scenario: what `blender -b shot.blend -a` does on a farm node, in the bpy module (which has no command line):
start-up with the saved preferences, open the file, render the animation; the process's exit code is whatever
Blender + the add-on make it (the add-on ends a failed neural render with a non-zero code)."""

import importlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(HERE))), "scripts", "demo"))
import addon_env  # noqa: E402

config = json.load(open(sys.argv[1], encoding="utf-8"))
addon_env.isolate(config["tmp"])  # the same user folder as farm_setup: its saved preferences and extension
import logging  # noqa: E402

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
import bpy  # noqa: E402

bpy.ops.wm.read_userpref()  # Blender's start-up: the saved preferences, which enable the extension
enabled = addon_env.MODULE in bpy.context.preferences.addons
bpy.ops.wm.open_mainfile(filepath=config["blend"])  # blender -b shot.blend
bpy.ops.render.render(animation=True)  # -a
mod = importlib.import_module(addon_env.MODULE)
scene = bpy.context.scene
status = bpy.context.window_manager.neurender
strips = mod.vse.our_strips(scene)
result = {"enabled": enabled, "state": status.job_state, "error": status.error, "out_dir": status.out_dir,
          "failure": mod.headless.failure() if hasattr(mod, "headless") else "(no headless module)",
          "strip": [{"start": s.frame_final_start, "end": s.frame_final_end - 1, "elements": len(s.elements),
                     "directory": bpy.path.abspath(s.directory)} for s in strips]}
print("RESULT " + json.dumps(result), flush=True)
addon_env.disable()  # only for the bpy module: bpy 4.5 hangs at exit with handlers registered (blender does not)

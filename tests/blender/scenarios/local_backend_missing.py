"""Scenario: 'start a local backend' with a folder that holds no neurender command."""

import sys

import common

config, mod = common.start(sys.argv[1])
import bpy  # noqa: E402

prefs = mod.preferences.get()
prefs.start_local = True
prefs.backend_env = config["env"]
try:
    bpy.ops.neurender.connect()
    error = ""
except RuntimeError as exc:
    error = str(exc)
common.finish({"error": error})

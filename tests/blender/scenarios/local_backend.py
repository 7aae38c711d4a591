"""Scenario: the add-on starts a local backend from a Python env, notices when it dies, stops it on disable."""

import os
import sys
import time

import common

config, mod = common.start(sys.argv[1])
import bpy  # noqa: E402

prefs = mod.preferences.get()
prefs.start_local = True
prefs.backend_env = config["env"]
prefs.sd_model = "/models/sd15/v1-5.safetensors"
prefs.controlnet_depth = "/models/controlnets/depth"
status = bpy.context.window_manager.neurender
out = {}
try:
    bpy.ops.neurender.connect()
    out["connect"] = "ok"
except RuntimeError as exc:
    out["connect"] = str(exc)
out["connected"] = status.connected
out["info"] = status.backend_info
local = mod.session.state().local
out["url"] = local.url
out["pid"] = local.proc.pid if local.proc else None
out["args"] = list(local.proc.args) if local.proc else []
out["self_pid"] = os.getpid()
versions = mod.session.make_client().version()
out["version"] = versions.get("backend_version")

local.proc.kill()
local.proc.wait(10)
mod.session.pump()
out["died_error"] = status.error
out["died_connected"] = status.connected

bpy.ops.neurender.connect()  # restarts it
pid2 = local.proc.pid
out["restarted"] = local.running and pid2 != out["pid"]
common.finish(out)  # disables the add-on: the child must be gone soon afterwards (stopping does not wait for it)
deadline = time.monotonic() + 5.0
alive = True
while alive and time.monotonic() < deadline:
    try:
        os.kill(pid2, 0)
        time.sleep(0.05)
    except OSError:
        alive = False
print("CHILD_ALIVE_AFTER_DISABLE", alive, flush=True)

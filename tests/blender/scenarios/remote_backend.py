"""Scenario: a backend that does not share this disk: upload the pass folder, download the frames, strip from them."""

import os
import sys

import common

config, mod = common.start(sys.argv[1])
import bpy  # noqa: E402
import scenes  # noqa: E402

compat = mod.compat
scene = scenes.build(frames=4, samples=1)
prefs = mod.preferences.get()
status = bpy.context.window_manager.neurender
shot = scene.neurender
shot.output_dir = config["out"]
shot.prompt = "a copper robot"
shot.steps = 2
prefs.backend_url = config["url"]
out = {"auto_shares": prefs.shares_disk()}  # AUTO and a loopback URL: by path
prefs.shared_disk = "NO"  # the artist says: that backend cannot see my files
out["no_shares"] = prefs.shares_disk()

messages = []
orig = mod.session.set_message
mod.session.set_message = lambda text, error="": (messages.append(error or text), orig(text, error))[1]


def run_op():
    try:
        return sorted(bpy.ops.neurender.render_animation())
    except RuntimeError as exc:
        return ["RuntimeError: " + str(exc)]


prefs.token = "not-the-token"
out["wrong_token"] = {"result": run_op(), "error": status.error}

prefs.token = config["token"]
out["ok"] = {"result": run_op(), "error": status.error, "state": status.job_state, "job_id": status.job_id,
             "out_dir": status.out_dir, "message": status.message}
se = scene.sequence_editor
out["strips"] = [{"channel": s.channel, "start": s.frame_final_start, "end": s.frame_final_end,
                  "elements": [e.filename for e in s.elements], "directory": s.directory, "ours": bool(s.get("neurender"))}
                 for s in compat.all_strips(se)] if se else []
out["pass_dir"] = mod.pass_export.pass_dir(scene)
out["root_listing"] = sorted(os.listdir(mod.pass_export.output_root(scene)))
out["messages"] = messages
common.finish(out)

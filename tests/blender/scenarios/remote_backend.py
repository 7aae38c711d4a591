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
out["messages"] = list(messages)
se = scene.sequence_editor
out["strips"] = [{"channel": s.channel, "start": s.frame_final_start, "end": s.frame_final_end,
                  "elements": [e.filename for e in s.elements], "directory": s.directory,
                  "ours": bool(s.get("neurender"))}
                 for s in compat.all_strips(se)] if se else []

# The UI path: zipping and uploading on the worker thread, downloading on the watcher thread, the main thread only
# drains their results (as the add-on's timer does). Records which thread did what and how long a pump took.
import threading  # noqa: E402
import time  # noqa: E402

main = threading.get_ident()
threads = {"zip": [], "upload": [], "frame": []}


def spy(name, fn):
    def wrapped(*a, **kw):
        threads[name].append(threading.get_ident() != main)
        return fn(*a, **kw)
    return wrapped


mod.remote.zip_pass_folder = spy("zip", mod.remote.zip_pass_folder)
mod.client.Client.submit_upload = spy("upload", mod.client.Client.submit_upload)
mod.client.Client.frame_png = spy("frame", mod.client.Client.frame_png)
st = mod.session.state()
st.worker = mod.worker.Worker(blocking=False)
messages.clear()
key = mod.jobs.new(scene, 1, 4)  # its own version, as the operator does
mod.pass_export.export_passes(scene, 1, 4, folder=mod.jobs.find(key=key)[1].abs_pass_dir)
mod.session.submit_job(scene, 1, 4, key=key)
submit_returned_state = status.job_state
pumps, deadline = [], time.monotonic() + 60
while status.job_state not in ("done", "failed", "cancelled") and time.monotonic() < deadline:
    t0 = time.perf_counter()
    mod.session.pump()
    pumps.append(time.perf_counter() - t0)
    time.sleep(0.05)
out["ui"] = {"state": status.job_state, "error": status.error, "job_id": status.job_id,
             "submit_returned_state": submit_returned_state, "threads": threads, "max_pump_s": max(pumps),
             "messages": list(messages), "out_dir": status.out_dir}
out["pass_dir"] = mod.pass_export.pass_dir(scene)
out["root_listing"] = sorted(os.listdir(mod.pass_export.output_root(scene)) + os.listdir(out["pass_dir"]))
common.finish(out)

"""Scenario: a second render while the first one runs (Render Animation twice, then Render This Frame while an
animation runs). The UI's threads are used (NEURENDER_THREADED) and driven like the add-on's timer."""

import hashlib
import os
import sys
import time

os.environ["NEURENDER_THREADED"] = "1"
import common  # noqa: E402

config, mod = common.start(sys.argv[1])
import bpy  # noqa: E402
import scenes  # noqa: E402

scene = scenes.build(frames=3, samples=1)
mod.preferences.get().backend_url = config["url"]
shot = scene.neurender
shot.output_dir = config["out"]
shot.prompt, shot.steps = "a tin robot", 5
status = bpy.context.window_manager.neurender
mod.session.state().worker = mod.worker.Worker(blocking=False)  # as NEURENDER_THREADED (also before it existed)
root = mod.pass_export.output_root(scene)
out = {}
messages = []
orig = mod.session.set_message
mod.session.set_message = lambda text, error="": (messages.append(error or text), orig(text, error))[1]


def pump_until(cond, timeout=40.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mod.session.pump()
        if cond():
            return True
        time.sleep(0.05)
    return False


def tree():
    found = {}
    for base, _dirs, files in os.walk(os.path.join(root, "passes")):
        for name in files:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = (hashlib.sha1(f.read()).hexdigest(), os.stat(path).st_mtime_ns)
    return found


def records():
    return [{"key": r.key, "version": r.version, "state": r.state, "job_id": r.job_id, "imported": r.imported,
             "strip": r.strip, "image": r.image, "out_dir": r.abs_out_dir, "message": r.message}
            for r in getattr(scene, "neurender_jobs", ())]


def ours():
    se = scene.sequence_editor
    return sorted((f"v{int(s.get('neurender')):03d}", s.frame_final_start, s.frame_final_end)
                  for s in (mod.compat.all_strips(se) if se else ()) if s.get("neurender"))


def state_of(i):
    recs = records()
    return recs[i]["state"] if len(recs) > i else ""


# 1. Render Animation while the previous Render Animation's job runs: both reach the VSE
bpy.ops.neurender.render_animation()
out["first_running"] = pump_until(lambda: status.job_state == "running")
first_job = status.job_id
before = tree()
out["second_op"] = sorted(bpy.ops.neurender.render_animation())
after = tree()
out["first_passes_untouched"] = all(after.get(k) == v for k, v in before.items()) and bool(before)
out["second_status"] = {"job_id": status.job_id, "state": status.job_state, "error": status.error}
pump_until(lambda: status.job_id != first_job and status.job_id != "", timeout=10)
out["watchers"] = sorted(mod.session.state().watchers) if hasattr(mod.session.state(), "watchers") else []
out["both_done"] = pump_until(lambda: [r["state"] for r in records()[:2]] == ["done", "done"]
                              and all(r["imported"] for r in records()[:2]))
out["part1"] = {"records": records(), "strips": ours(), "messages": list(messages), "first_job": first_job,
                "status_job": status.job_id, "status_state": status.job_state}


def part2():
    """Render This Frame while an animation runs; the animation (not the panel's current job) is cancelled from
    its row of the Jobs panel."""
    shot.steps = 20
    bpy.ops.neurender.render_animation()
    pump_until(lambda: state_of(2) == "running")
    scene.frame_set(2)
    out["frame_op"] = sorted(bpy.ops.neurender.render_frame())
    pump_until(lambda: state_of(3) == "queued")
    out["cancel_poll_current"] = bpy.ops.neurender.cancel.poll()  # the panel's Cancel follows the newest job
    third = records()[2]
    out["cancel_op"] = sorted(bpy.ops.neurender.job_cancel(key=third["key"]))
    out["part2_done"] = pump_until(lambda: state_of(2) == "cancelled" and state_of(3) == "done"
                                   and records()[3]["imported"], timeout=40)
    out["part2"] = {"records": records(), "strips": ours(),
                    "images": [i.name for i in bpy.data.images if i.name.startswith("neurender")]}


try:
    part2()
except Exception as exc:  # noqa: BLE001 - reported to the test
    out["part2_error"] = repr(exc)
common.finish(out)

"""Scenario: jobs are records in the .blend. Process "a": a render, the file saved mid-job and opened again in the
same process (the job is followed again and its frames reach the VSE), a backend that goes away for a while and comes
back, a render followed across disabling and re-enabling the extension, then a long render saved mid-job and the
process exits. Process "b" (a Blender restart): opens the files saved mid-job; finished jobs are imported, the running
one is followed to its end. The UI's threads are used (NEURENDER_THREADED) and driven like the add-on's timer."""

import os
import sys
import time

os.environ["NEURENDER_THREADED"] = "1"
import common  # noqa: E402

config, mod = common.start(sys.argv[1])
import addon_env  # noqa: E402
import addon_utils  # noqa: E402
import bpy  # noqa: E402
import scenes  # noqa: E402

project = config["out"]
out = {}


def m():
    import importlib

    return importlib.import_module(addon_env.MODULE)


T0 = time.monotonic()
out["times"] = []


def pump_until(cond, timeout=40.0):
    out["times"].append(round(time.monotonic() - T0, 2))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m().session.pump()
        if cond():
            return True
        time.sleep(0.05)
    return False


def rec(i):
    return bpy.context.scene.neurender_jobs[i]


def records():
    return [{"kind": r.kind, "version": r.version, "state": r.state, "job_id": r.job_id, "strip": r.strip,
             "image": r.image, "imported": r.imported, "message": r.message}
            for r in bpy.context.scene.neurender_jobs]


def ours():
    se = bpy.context.scene.sequence_editor
    return sorted((f"v{int(s.get('neurender')):03d}", s.frame_final_start, s.frame_final_end, len(s.elements))
                  for s in (m().compat.all_strips(se) if se else ()) if s.get("neurender"))


def started(i):
    return lambda: len(bpy.context.scene.neurender_jobs) > i and rec(i).state in ("queued", "running")


if config["phase"] == "a":
    scenes.build(frames=3, samples=1)
    scene = bpy.context.scene
    m().preferences.get().backend_url = config["url"]
    scene.neurender.prompt, scene.neurender.steps = "a tin robot", 4
    os.makedirs(project, exist_ok=True)
    blend = os.path.join(project, "shot.blend")
    bpy.ops.wm.save_as_mainfile(filepath=blend)

    # 1. save mid-job, open the file again in the same process
    bpy.ops.neurender.render_animation()
    out["job1_started"] = pump_until(started(0))
    bpy.ops.wm.save_mainfile()
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(project, "midjob.blend"), copy=True)
    out["job1_saved_state"] = rec(0).state
    bpy.ops.wm.open_mainfile(filepath=blend)
    out["watchers_after_open"] = len(m().session.state().watchers)
    out["job1_done"] = pump_until(lambda: rec(0).imported)
    out["job1"] = {"records": records(), "strips": ours()}

    # 2. the backend goes away for a few seconds mid-job and comes back: the job is followed again
    bpy.ops.neurender.render_animation()
    pump_until(started(1))
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(config["url"] + "/_pause?seconds=4", method="POST")).read()
    messages = []

    def told():
        if rec(1).message:
            messages.append(rec(1).message)
        return bool(messages)

    pump_until(told, timeout=15)
    out["job2_done"] = pump_until(lambda: rec(1).imported, timeout=40)
    out["job2"] = {"records": records(), "strips": ours(), "message_while_away": messages}

    # 3. disable and re-enable the extension mid-job
    bpy.context.scene.frame_set(2)
    bpy.ops.neurender.render_frame()
    out["job3_started"] = pump_until(started(2))
    addon_utils.disable(addon_env.MODULE, default_set=True)
    addon_utils.enable(addon_env.MODULE, default_set=True)
    out["records_after_enable"] = [(r.job_id, r.state) for r in bpy.context.scene.neurender_jobs]
    m().session.pump()  # the add-on's timer: the first pump after register reattaches
    out["watchers_after_enable"] = list(m().session.state().watchers)
    out["job3_done"] = pump_until(lambda: rec(2).imported)
    out["job3"] = {"records": records(),
                   "images": [i.name for i in bpy.data.images if i.name.startswith("neurender")]}

    # 4. a long render saved mid-job; this process ends while it runs
    m().preferences.get().backend_url = config["url"]  # re-enabling reset the preferences
    bpy.context.scene.neurender.steps = 30
    bpy.ops.neurender.render_animation()
    out["job4_started"] = pump_until(started(3))
    out["job4_id"] = rec(3).job_id
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(project, "running.blend"), copy=True)

    # 5. an undo step back to before the first and the last render took their records away (simulated: Blender's
    #    undo stack does not exist headless): undo_post brings both back, the running one still followed
    jobs = bpy.context.scene.neurender_jobs
    jobs.remove(3)
    jobs.remove(0)
    m().handlers.on_undo_post()
    out["after_undo"] = sorted((r.version, r.job_id, r.state, r.imported) for r in bpy.context.scene.neurender_jobs)
    out["undo_running_watched"] = m().session.state().watchers[out["job4_id"]].alive
else:
    # a Blender restart: open the file saved while its last job ran
    bpy.ops.wm.open_mainfile(filepath=os.path.join(project, "running.blend"))
    c = m().session._client_for(rec(3))
    out["job4_backend_state_at_open"] = c.job(rec(3).job_id)["state"]
    out["job4_saved_state"] = rec(3).state
    out["watchers"] = list(m().session.state().watchers)
    out["job4_done"] = pump_until(lambda: rec(3).imported, timeout=60)
    out["job4"] = {"records": records(), "strips": ours()}
    # the file saved during the first job: that job finished long ago; it is imported on open
    bpy.ops.wm.open_mainfile(filepath=os.path.join(project, "midjob.blend"))
    out["midjob_saved"] = records()
    out["midjob_done"] = pump_until(lambda: rec(0).imported)
    out["midjob"] = {"records": records(), "strips": ours()}
common.finish(out)

"""Scenario: the pass render as a render job (UI mode), driven headless by standing in for the two things only the
UI has: INVOKE_DEFAULT starting Blender's render job (here: the same render, run at once) and the timer."""

import os
import sys

import common

config, mod = common.start(sys.argv[1])
import bpy  # noqa: E402
import scenes  # noqa: E402

scene = scenes.build(frames=3, samples=1, width=32, height=24)
scene.neurender.output_dir = config["out"]
pj = mod.pass_job
status = bpy.context.window_manager.neurender
out = {}


def invoker(last=None, result=("RUNNING_MODAL",)):
    calls = []

    def invoke(mode, **kw):
        calls.append({"mode": mode, "scene": kw["scene"], "animation": kw["animation"]})
        if result == ("RUNNING_MODAL",):
            tmp = bpy.data.scenes[kw["scene"]]
            if last is not None:  # Esc after `last`: the job ends early
                tmp.frame_end = last
            bpy.ops.render.render(animation=True, scene=kw["scene"], layer=kw["layer"])
        return set(result)
    return invoke, calls


def run(name, folder, **kw):
    done, polls = [], []
    invoke, calls = invoker(**kw)
    pj.start(scene, 1, 3, folder, lambda m, e: done.append((m, e)), background=False, invoke=invoke,
             schedule=polls.append)
    r = {"calls": calls, "done_at_return": len(done), "scenes_at_return": sorted(s.name for s in bpy.data.scenes)}
    ticks = 0
    while polls and ticks < 50:
        fn = polls.pop()
        again = fn()
        ticks += 1
        if again is not None:
            polls.append(fn)
    m, e = done[0] if done else (None, None)
    r.update(done=len(done), frames=[f.frame for f in m.frames] if m else None, error=str(e) if e else "",
             error_type=type(e).__name__ if e else "", scenes=sorted(s.name for s in bpy.data.scenes),
             files=sorted(os.listdir(folder)))
    out[name] = r


running = [True, True, False]  # the artist's own render job ends only at the third look
orig_running = pj.render_job_running
pj.render_job_running = lambda: running.pop(0) if running else False
run("waits_for_render", os.path.join(config["out"], "wait"))
pj.render_job_running = orig_running
run("job", os.path.join(config["out"], "job"))
run("cancelled", os.path.join(config["out"], "cancelled"), last=1)
run("could_not_start", os.path.join(config["out"], "fallback"), result=("CANCELLED",))

# render_then: the status while it runs and the sentence when the job was cancelled
polls = []
orig_start = pj.start
pj.start = lambda *a, **k: orig_start(*a, background=False, invoke=invoker(last=1)[0], schedule=polls.append, **k)
pj.render_then(scene, 1, 3, os.path.join(config["out"], "then"), lambda s, m: None, "The passes of frames 1-3")
out["then_state_running"] = status.job_state
while polls:
    fn = polls.pop()
    if fn() is not None:
        polls.append(fn)
out["then_state"], out["then_error"] = status.job_state, status.error
pj.start = orig_start
common.finish(out)

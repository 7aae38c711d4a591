"""Scenario: a demanding artist's own scene (probe_scene.py) used as an artist would, one case per process.

Cases (config["case"]):
- actions: Connect, Render This Frame, Render Animation, F12 and Ctrl+F12 with the hook off and on, keyframes restyle
  and window modes, a changed frame range, Save/Apply Look, Open Output, a wrong model path, a backend that is not
  running, an output folder that cannot be written, disabling and re-enabling the extension; after each, the
  artist's scene (generic RNA walk: render/cycles/image settings, view layers, objects, modifiers, animation,
  camera, compositor, every VSE strip) and the artist's own files are compared with before.
- hook_overwrite_off: Ctrl+F12 with the hook on when the artist's Output has Overwrite off and the beauty frames
  exist (Blender skips them).
- camera_cuts: a camera cut by a timeline marker; the manifest's per-frame cameras.
- dof: passes with the artist's camera depth of field on and off.
- panel: what the panel says after a random-weights result; where the files go (saved and unsaved .blend).
"""

import importlib
import json
import os
import shutil
import sys

with open(sys.argv[1], encoding="utf-8") as _f:
    if json.load(_f)["case"] in ("lifecycle",):
        os.environ["NEURENDER_THREADED"] = "1"  # the UI's threads, driven like the add-on's timer (session.pump)

import common  # noqa: E402

config, mod = common.start(sys.argv[1])
import bpy  # noqa: E402
import panel_record  # noqa: E402
import probe_scene  # noqa: E402

case = config["case"]
folder = os.path.join(config["tmp"], "project")
os.makedirs(folder, exist_ok=True)
scene = probe_scene.build(folder)
prefs = mod.preferences.get()
prefs.backend_url = config["url"]
shot = scene.neurender
shot.prompt = "a tin robot"
shot.steps = 2
shot.deflicker_preset = "OFF"
scene.cycles.samples = 4  # the artist's own renders in this test: production settings otherwise, kept short here
scene.frame_set(scene.frame_current)
bpy.ops.wm.save_mainfile()
nr = os.path.join(folder, "neurender")
out = {}


def nr_files():
    return sorted(os.path.relpath(os.path.join(r, n), nr) for r, _, ns in os.walk(nr) for n in ns)


def current_scene():
    return bpy.data.scenes["sh010"]


def snap():
    return probe_scene.snapshot(current_scene(), folder, skip_under=[nr, os.path.join(folder, "looks")])


def act(name, fn, artist_writes=()):
    """Run one action; record what changed in the artist's scene/files and what the panel said."""
    before = snap()
    status = bpy.context.window_manager.neurender
    status.message = status.error = ""
    files_before = set(nr_files())
    try:
        result = sorted(fn())
    except RuntimeError as exc:  # an operator's ERROR report
        result = ["REFUSED", str(exc).strip()]
    after = snap()
    diffs = probe_scene.diff(before, after)
    status = bpy.context.window_manager.neurender  # a new one after the extension was re-enabled
    # the artist's own render writes the artist's own files: allowed (and checked) only for F12 / Ctrl+F12
    written = sorted(set(after.get("files", {})) - set(before.get("files", {})))
    diffs = [d for d in diffs if not any(d.startswith(f".files.{w}:") for w in written)]
    record = panel_record.draw_all(importlib.import_module(common.addon_env.MODULE), bpy)
    out[name] = {"result": result, "diffs": diffs[:20], "artist_written": written, "message": status.message,
                 "error": status.error, "state": status.job_state, "hook": current_scene().neurender.render_hook,
                 "red": panel_record.texts(record, alert=True), "new_files": sorted(set(nr_files()) - files_before),
                 "all_files": nr_files()}


if case == "actions":
    act("connect", lambda: bpy.ops.neurender.connect())
    act("render_frame", lambda: bpy.ops.neurender.render_frame())
    act("render_animation", lambda: bpy.ops.neurender.render_animation())
    manifests = [os.path.join(r, "manifest.json") for r, _, ns in os.walk(nr) if "manifest.json" in ns]
    newest = max(manifests, key=os.path.getmtime)
    with open(newest, encoding="utf-8") as f:
        m = json.load(f)
    out["manifest"] = {"fps": m["fps"], "size": [m["width"], m["height"]], "range": [m["frame_start"], m["frame_end"]]}
    act("F12 hook off", lambda: bpy.ops.render.render(write_still=True))
    act("Ctrl+F12 hook off", lambda: bpy.ops.render.render(animation=True))
    for name in os.listdir(os.path.join(folder, "beauty")):  # the artist clears the beauty folder
        os.remove(os.path.join(folder, "beauty", name))
    current_scene().neurender.render_hook = True
    act("F12 hook on", lambda: bpy.ops.render.render(write_still=True))
    act("Ctrl+F12 hook on", lambda: bpy.ops.render.render(animation=True))
    current_scene().neurender.render_hook = False
    shot.consistency, shot.img2img_strength = "keyframes", 0.5
    act("keyframes restyle", lambda: bpy.ops.neurender.render_animation())
    shot.consistency, shot.img2img_strength = "window", 0.0
    act("window", lambda: bpy.ops.neurender.render_animation())
    shot.consistency = "first+prev"
    scene.frame_start, scene.frame_end = 12, 13  # the artist's change, before the snapshot of the next action
    act("range 12-13", lambda: bpy.ops.neurender.render_animation())
    shot.look_file = os.path.join(folder, "looks", "toon.nrlook")
    act("look save", lambda: bpy.ops.neurender.look_save())
    act("look apply", lambda: bpy.ops.neurender.look_apply())
    act("open output", lambda: bpy.ops.neurender.open_output())
    shot.model = os.path.join(folder, "models", "missing.safetensors")
    act("wrong model path", lambda: bpy.ops.neurender.render_animation())
    shot.model = ""
    prefs.backend_url = "http://127.0.0.1:9"
    act("backend not running", lambda: bpy.ops.neurender.render_animation())
    prefs.backend_url = config["url"]
    open(os.path.join(folder, "notes.txt"), "w").close()
    shot.output_dir = os.path.join(folder, "notes.txt", "renders") + os.sep
    act("output not writable", lambda: bpy.ops.neurender.render_frame())
    shot.output_dir = "//neurender/"
    shot.controlnets.add().kind = "edges"
    kept = {"prompt": shot.prompt, "steps": shot.steps, "units": len(shot.controlnets)}
    import addon_utils

    def reenable():
        addon_utils.disable(common.addon_env.MODULE, default_set=True)
        addon_utils.enable(common.addon_env.MODULE, default_set=True)
        return {"FINISHED"}

    act("disable + enable", reenable)
    s = current_scene().neurender
    out["reenabled_shot"] = {"prompt": s.prompt, "steps": s.steps, "units": len(s.controlnets)} == kept

elif case == "hook_overwrite_off":
    bpy.ops.render.render(animation=True)  # the artist's own render, hook off: the beauty frames exist
    shot.render_hook = True
    act("Ctrl+F12 again, Overwrite off", lambda: bpy.ops.render.render(animation=True))
    shot.render_hook = False

elif case == "camera_cuts":
    close = bpy.data.objects.new("CloseUp", bpy.data.cameras.new("CloseUp"))
    scene.collection.objects.link(close)
    close.location, close.rotation_euler = (0.0, -3.0, 1.0), (1.3, 0.0, 0.0)
    scene.timeline_markers.new("open", frame=probe_scene.FRAME_START).camera = scene.camera
    scene.timeline_markers.new("cut", frame=13).camera = close
    scene.frame_set(12)
    act("render_animation", lambda: bpy.ops.neurender.render_animation())
    manifests = [os.path.join(r, "manifest.json") for r, _, ns in os.walk(nr) if "manifest.json" in ns]
    with open(max(manifests, key=os.path.getmtime), encoding="utf-8") as f:
        m = json.load(f)
    expect = {}
    for f in range(probe_scene.FRAME_START, probe_scene.FRAME_END + 1):
        scene.frame_set(f)
        w2c = scene.camera.matrix_world.inverted()
        expect[f] = [[round(w2c[r][c], 4) for c in range(4)] for r in range(4)]
    out["cameras"] = {str(e["frame"]): [[round(v, 4) for v in row] for row in e["camera"]["world_to_camera"]]
                      for e in m["frames"]}
    out["expected"] = {str(k): v for k, v in expect.items()}
    out["artist_camera_per_frame"] = {}
    for f in range(probe_scene.FRAME_START, probe_scene.FRAME_END + 1):
        scene.frame_set(f)
        out["artist_camera_per_frame"][str(f)] = scene.camera.name

elif case == "dof":
    import exr_io
    import numpy as np

    cam = scene.camera.data
    cam.dof.focus_distance, cam.dof.aperture_fstop = 1.0, 0.5  # a shallow-focus close-up
    depth = {}
    before_ids = (sorted(o.name for o in bpy.data.objects), sorted(c.name for c in bpy.data.cameras))
    for dof in (True, False):
        cam.dof.use_dof = dof
        d = os.path.join(config["tmp"], f"passes_dof{int(dof)}")
        mod.pass_export.export_passes(scene, 12, 12, folder=d)
        ch = exr_io.channels(os.path.join(d, "passes_0012.exr"))
        depth[dof] = ch[[k for k in ch if k.endswith("Depth.Z")][0]]
    cam.dof.use_dof = True
    out["ids_left"] = [sorted(o.name for o in bpy.data.objects), sorted(c.name for c in bpy.data.cameras)] == [
        *map(list, before_ids)]
    out["artist_dof"] = [cam.dof.use_dof, round(cam.dof.aperture_fstop, 3), round(cam.dof.focus_distance, 3)]
    pinhole = depth[False]
    fg = pinhole < 100
    out["depth_rel_err_median"] = float(np.median(np.abs(depth[True][fg] - pinhole[fg]) / pinhole[fg]))
    out["background_mismatch"] = float(np.mean((depth[True] < 100) != fg))

elif case == "panel":
    bpy.ops.neurender.render_animation()
    record = panel_record.draw_all(mod, bpy)
    labels = " ".join(i["text"] for i in record if i["what"] == "label")
    status = bpy.context.window_manager.neurender
    out["random_weights_said"] = labels.count("RANDOM WEIGHTS")
    out["message"] = status.message
    out["saved_labels"] = "".join(i["text"] for i in record if i["what"] == "label")
    out["panel_texts"] = panel_record.texts(record)
    scene.render.resolution_percentage = 400  # 768 x 320: the advice about the size goes
    out["panel_texts_full_size"] = panel_record.texts(panel_record.draw_all(mod, bpy))
    scene.render.resolution_percentage = 50
    out["saved_root"] = mod.pass_export.output_root(scene)
    bpy.ops.wm.read_homefile(use_empty=True)  # a new, unsaved file
    bpy.context.scene.name = "sh020"
    record = panel_record.draw_all(mod, bpy)
    out["unsaved_labels"] = "".join(i["text"] for i in record if i["what"] == "label")
    out["unsaved_created_by_drawing"] = os.path.isdir(os.path.join(bpy.utils.extension_path_user(
        common.addon_env.MODULE, path="renders", create=False), "sh020"))
    out["unsaved_root"] = mod.pass_export.output_root(bpy.context.scene)  # creates it (a render would)
    shutil.rmtree(out["unsaved_root"], ignore_errors=True)

elif case == "second_render_panel":
    # a finished render, then a second one: what the panel shows while the scene and backend are checked, and when
    # the job is submitted (before the backend answers anything about it)
    bpy.ops.neurender.render_animation()
    seen = {}

    def look(when):
        record = panel_record.draw_all(mod, bpy)
        seen[when] = {"progress": [i["text"] for i in record if i["what"] == "progress"],
                      "labels": [i["text"] for i in record if i["what"] == "label"][:12]}

    orig_export, orig_submit = mod.pass_export.export_passes, mod.client.Client.submit

    def export(*a, **k):
        look("checking")
        return orig_export(*a, **k)

    def submit(self, *a, **k):
        look("submitting")
        return orig_submit(self, *a, **k)

    mod.pass_export.export_passes, mod.client.Client.submit = export, submit
    shot.prompt = "a second look"
    bpy.ops.neurender.render_animation()
    mod.pass_export.export_passes, mod.client.Client.submit = orig_export, orig_submit
    out["seen"] = seen

elif case == "copy_message":
    # a backend error first (with the backend's own detail), then a refusal found before anything is sent
    shot.model = os.path.join(folder, "models", "missing.safetensors")
    prefs.shared_disk = mod.remote.SHARED_NO  # a backend on another computer: the model path is checked by the backend (404/422)
    try:
        bpy.ops.neurender.render_frame()
    except RuntimeError:
        pass
    st = bpy.context.window_manager.neurender
    out["first_error"], out["first_detail"] = st.error, st.error_detail
    shot.model = ""
    prefs.shared_disk = mod.remote.SHARED_AUTO
    open(os.path.join(folder, "notes.txt"), "w").close()
    shot.output_dir = os.path.join(folder, "notes.txt", "renders") + os.sep
    try:
        bpy.ops.neurender.render_frame()
    except RuntimeError:
        pass
    bpy.ops.neurender.copy_message()
    out["second_error"], out["copied"] = st.error, st.copied

elif case == "sizes":
    # 192 x 80 at 50 %: 96 x 40 (aspect 2.4); the artist asks for an exact width (or height) only
    sizes = {}
    for width, height in ((0, 0), (512, 0), (0, 216), (512, 256)):
        shot.width, shot.height = width, height
        settings = mod.properties.to_settings(scene, prefs)
        record = panel_record.draw_all(mod, bpy)
        sizes[f"{width}x{height}"] = {"sent": [settings.width, settings.height],
                                      "label": [i["text"] for i in record if i["what"] == "label"
                                                and i["text"].startswith("Frames of")]}
    out["sizes"] = sizes

elif case == "two_scenes":
    # a second shot in the same .blend, both with the default Output (//neurender/)
    other = bpy.data.scenes.new("sh020")
    for child in scene.collection.children:
        other.collection.children.link(child)
    for obj in scene.collection.objects:
        other.collection.objects.link(obj)
    other.camera, other.world = scene.camera, scene.world
    other.render.engine = "CYCLES"
    other.cycles.samples = 1
    other.render.resolution_x, other.render.resolution_y = 64, 32
    other.frame_start, other.frame_end = 12, 13  # overlaps sh010 (11-14)
    other.neurender.steps, other.neurender.deflicker_preset = 2, "OFF"
    bpy.ops.wm.save_mainfile()
    bpy.ops.neurender.render_animation()
    strip = mod.vse.our_strips(scene)[0]
    first = os.path.abspath(bpy.path.abspath(strip.directory))
    shown = {e.filename: probe_scene.files(first).get(e.filename) for e in strip.elements}
    record = panel_record.draw_all(mod, bpy)
    out["sh010_panel_after_sh010"] = [i["text"] for i in record if i["what"] == "label"]
    with bpy.context.temp_override(scene=other):
        bpy.ops.neurender.render_animation()
        record = panel_record.draw_all(mod, bpy)
        out["sh020_panel"] = [i["text"] for i in record if i["what"] == "label"]
    record = panel_record.draw_all(mod, bpy)  # the artist looks at sh010 again: the status is sh020's job
    out["sh010_panel"] = [i["text"] for i in record if i["what"] == "label"]
    out["sh020_strips"] = len(mod.vse.our_strips(other))
    strip = mod.vse.our_strips(scene)[0]
    out["sh010_strip_frames"] = [strip.frame_final_start, strip.frame_final_end - 1, len(strip.elements)]
    again = os.path.abspath(bpy.path.abspath(strip.directory))
    out["sh010_shown_before"] = shown
    out["sh010_shown_after"] = {e.filename: probe_scene.files(again).get(e.filename) for e in strip.elements}

elif case == "local_backend_missing":
    prefs.start_local = True
    prefs.backend_env = os.path.join(folder, "no-such-venv")
    act("connect", lambda: bpy.ops.neurender.connect())
    act("render_animation", lambda: bpy.ops.neurender.render_animation())
    prefs.start_local = False

elif case == "cancel":
    shot.steps = 6
    orig = mod.live.on_snapshot
    asked = []

    def snapshot(st, job, *a, **k):
        text = orig(st, job, *a, **k)
        if not asked and (job.get("progress") or {}).get("step", 0) >= 2:
            asked.append(None)  # first: cancelling may report a snapshot inline (blocking worker)
            asked[0] = mod.session.cancel_job()
        return text

    mod.live.on_snapshot = snapshot
    act("cancel mid-job", lambda: bpy.ops.neurender.render_animation())
    mod.live.on_snapshot = orig
    out["asked"] = asked
    st = bpy.context.window_manager.neurender
    out["progress"], out["progress_text"] = st.progress, st.progress_text
    out["strips"] = [(s.name, len(s.elements)) for s in mod.vse.our_strips(scene)]
    record = panel_record.draw_all(mod, bpy)
    out["panel"] = [i["text"] for i in record if i["what"] in ("label", "progress")][:14]
    out["cancel_enabled"] = mod.operators.cancel.NEURENDER_OT_cancel.poll(bpy.context)
    # the next render: what its first snapshots show (the cancelled job reached preview step 5)
    firsts = []

    def first_snapshots(st, job, *a, **k):
        text = orig(st, job, *a, **k)
        if len(firsts) < 2:
            firsts.append({"step": (job.get("progress") or {}).get("step", 0), "preview_step": st.preview_step,
                           "state": job.get("state")})
        return text

    mod.live.on_snapshot = first_snapshots
    bpy.ops.neurender.render_animation()
    mod.live.on_snapshot = orig
    out["next_job_first_snapshots"] = firsts

elif case == "sequencer_output":
    # the artist's output goes through their own sequencer edit (slate + colour note over the 3D scene strip)
    import numpy as np

    se = scene.sequence_editor
    try:
        mod.compat.strips(se).new_scene(name="plate", scene=scene, channel=1, frame_start=probe_scene.FRAME_START)
    except TypeError:
        pass
    scene.render.use_sequencer, scene.render.use_stamp = True, False
    mod.compat.set_file_format(scene.render.image_settings, "PNG")
    scene.render.image_settings.color_depth = "8"

    def beauty(tag):
        scene.render.filepath = os.path.join(folder, "beauty", f"{tag}_")
        bpy.ops.render.render(write_still=True)
        img = bpy.data.images.load(os.path.join(folder, "beauty", f"{tag}_.png"))
        px = np.array(img.pixels[:])
        bpy.data.images.remove(img)
        return px

    first = beauty("before")
    bpy.ops.neurender.render_animation()
    second = beauty("after")
    out["max_pixel_change"] = float(np.abs(first - second).max())
    out["our_strips"] = [(s.name, s.channel, s.mute) for s in mod.vse.our_strips(scene)]
    out["artist_channels"] = sorted(s.channel for s in mod.compat.all_strips(se) if not s.get("neurender"))

elif case == "random_results":
    # no checkpoint: an animation and a single frame, both noise; what their results say
    import types

    bpy.ops.neurender.render_animation()
    bpy.ops.neurender.render_frame()
    rec = []
    ctx = types.SimpleNamespace(scene=scene, window_manager=bpy.context.window_manager, region=None,
                                preferences=bpy.context.preferences)
    mod.jobs_panel.NEURENDER_PT_jobs.draw(types.SimpleNamespace(layout=panel_record.Layout(rec)), ctx)
    out["jobs_panel"] = [(i["text"], i["alert"]) for i in rec if i["what"] == "label"]
    out["records"] = [{k: getattr(r, k) for k in ("kind", "version", "state", "out_dir", "pass_dir", "strip", "image",
                                                  "message")} for r in scene.neurender_jobs]
    out["strips"] = [(s.name, s.directory, len(s.elements), s.channel) for s in mod.vse.our_strips(scene)]
    out["images"] = [(i.name, i.filepath) for i in bpy.data.images if i.name.startswith("neurender")]

elif case == "lifecycle":
    # the UI's way: the worker in threads, the timer pumping; a job saved mid-way and the file opened again, a
    # second render while the first runs, the first cancelled; the artist's scene compared after each
    import time

    def m():
        return importlib.import_module(common.addon_env.MODULE)

    def pump_until(cond, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m().session.pump()
            if cond():
                return True
            time.sleep(0.05)
        return False

    def recs():
        return [(r.state, r.imported, r.version) for r in current_scene().neurender_jobs]

    def running(i):
        return lambda: len(current_scene().neurender_jobs) > i and current_scene().neurender_jobs[i].state in (
            "queued", "running")

    def settled():
        """The snapshot after the scene is evaluated at its own frame again (a file just opened, or a pass render
        that evaluated the shared objects at other frames, leaves evaluated matrices of another frame behind)."""
        current_scene().frame_set(current_scene().frame_current)
        return snap()

    blend = bpy.data.filepath
    shot.steps = 8
    bpy.ops.wm.save_mainfile()
    bpy.ops.wm.open_mainfile(filepath=blend)  # the artist's file as opened
    base = settled()
    bpy.ops.neurender.render_animation()
    out["started"] = pump_until(running(0))
    bpy.ops.wm.save_mainfile()  # mid-job
    bpy.ops.wm.open_mainfile(filepath=blend)
    out["reloaded_done"] = pump_until(lambda: current_scene().neurender_jobs[0].imported)
    out["after_reload"] = probe_scene.diff(base, settled())
    out["strips_after_reload"] = sorted((s.name, len(s.elements)) for s in m().vse.our_strips(current_scene()))
    # a second render while one runs; then the first is cancelled
    bpy.ops.neurender.render_animation()
    pump_until(running(1))
    bpy.ops.neurender.render_animation()
    out["second_while_running"] = {"records": recs(), "error": bpy.context.window_manager.neurender.error}
    first = current_scene().neurender_jobs[1]
    out["first_cancel"] = m().session.cancel_job(first.job_id)
    out["both_final"] = pump_until(lambda: all(r.state in ("done", "failed", "cancelled") and
                                              (r.imported or r.state != "done")
                                              for r in current_scene().neurender_jobs), timeout=40)
    out["final_records"] = recs()
    out["after_second"] = probe_scene.diff(base, settled())
    out["artist_strips"] = sorted(s.name for s in mod.compat.all_strips(current_scene().sequence_editor)
                                  if not s.get("neurender"))

common.finish(out)

"""Scenario: an animation render, then Render This Frame, in a saved .blend: every render has its own versioned
folders, the single frame never touches the animation's frames, manifest or strip; paths are stored relative to the
.blend, so the project moved elsewhere still finds its frames."""

import hashlib
import os
import shutil
import sys

import common

config, mod = common.start(sys.argv[1])
import bpy  # noqa: E402
import scenes  # noqa: E402

compat = mod.compat
scene = scenes.build(frames=4, samples=1)
prefs = mod.preferences.get()
prefs.backend_url = config["url"]
shot = scene.neurender
shot.prompt = "a tin robot"
shot.steps = 2
project = config["out"]
os.makedirs(project, exist_ok=True)
blend = os.path.join(project, "shot.blend")
bpy.ops.wm.save_as_mainfile(filepath=blend)  # output_dir stays the default '//neurender/'
scene = bpy.context.scene
out = {"output_dir": scene.neurender.output_dir}


def tree(folder):
    """Every file under folder with its SHA-1."""
    found = {}
    for base, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = hashlib.sha1(f.read()).hexdigest()
    return found


def strips():
    se = scene.sequence_editor
    return [{"name": s.name, "channel": s.channel, "start": s.frame_final_start, "end": s.frame_final_end,
             "elements": [e.filename for e in s.elements], "directory": s.directory, "ours": bool(s.get("neurender")),
             "version": int(s.get("neurender") or 0)}
            for s in compat.all_strips(se)] if se else []


def records():
    return [{"kind": r.kind, "version": r.version, "state": r.state, "pass_dir": r.pass_dir, "out_dir": r.out_dir,
             "strip": r.strip, "image": r.image, "range": [r.frame_start, r.frame_end], "job_id": r.job_id}
            for r in getattr(scene, "neurender_jobs", ())]  # (absent before job records existed)


out["animation"] = sorted(bpy.ops.neurender.render_animation())
root = mod.pass_export.output_root(scene)
out["root"] = root
v1 = tree(root)
out["after_animation"] = {"strips": strips(), "records": records(), "files": sorted(v1)}

scene.frame_set(2)
out["frame"] = sorted(bpy.ops.neurender.render_frame())
v2 = tree(root)
out["after_frame"] = {"strips": strips(), "records": records(), "files": sorted(v2),
                      "v001_unchanged": {k: v for k, v in v1.items() if v2.get(k) != v} == {},
                      "images": [{"name": i.name, "filepath": i.filepath, "size": list(i.size)}
                                 for i in bpy.data.images if i.name.startswith("neurender")]}


class Layout:
    """Records what the Jobs panel draws (bpy has no UI in background mode); operators must exist."""

    calls: list = []

    def __getattr__(self, name):
        return None

    def __setattr__(self, name, value):
        pass

    def _child(self, *a, **k):
        return Layout()

    row = column = box = _child

    def label(self, text="", **kw):
        Layout.calls.append("label:" + text)

    def operator(self, idname, **kw):
        cat, _, op = idname.partition(".")
        getattr(getattr(bpy.ops, cat), op).get_rna_type()  # raises for an operator that does not exist
        Layout.calls.append(idname)
        return Layout()


if hasattr(mod, "jobs_panel"):
    import types

    mod.jobs_panel.NEURENDER_PT_jobs.draw(types.SimpleNamespace(layout=Layout()), bpy.context)
out["jobs_panel"] = Layout.calls
v001 = os.path.join(root, "passes", "v001")
out["v001_manifest_frames"] = ([f.frame for f in mod.pass_export.read_manifest(v001).frames]
                               if os.path.isdir(v001) else [])
bpy.ops.wm.save_mainfile()

# the whole project moves to another folder (or machine): the stored paths still lead to its files
moved = config["out"] + "_moved"
shutil.move(project, moved)
bpy.ops.wm.open_mainfile(filepath=os.path.join(moved, "shot.blend"))
scene = bpy.context.scene
rec = scene.neurender_jobs[0] if hasattr(scene, "neurender_jobs") else None
strip = next(s for s in compat.all_strips(scene.sequence_editor) if s.get("neurender"))
out["moved"] = {"abs_out_dir": rec.abs_out_dir if rec else "", "exists": bool(rec) and os.path.isdir(rec.abs_out_dir),
                "strip_dir": bpy.path.abspath(strip.directory),
                "strip_first_exists": os.path.isfile(os.path.join(bpy.path.abspath(strip.directory),
                                                                  strip.elements[0].filename)),
                "image_exists": [os.path.isfile(bpy.path.abspath(i.filepath)) for i in bpy.data.images
                                 if i.name.startswith("neurender")]}
out["reimport"] = mod.session.import_record(scene, rec) if rec else ""
common.finish(out)

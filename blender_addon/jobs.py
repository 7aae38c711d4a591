"""Job records stored on the scene, so in the .blend: every neural render neurender started for the shot.

A record is made before the passes of a render are written and follows the job to its end: a local key, the
backend's job id, which backend, the kind (animation or single frame), the frame range, the version and its folders
(``passes/v003``, ``frames/v003``: relative to the .blend, ``//``, when they lie under the saved .blend's folder,
so a moved project still finds them), the state last seen, and the strip or image it placed. A file load, a
Blender restart or re-enabling the extension reattaches to the records still running and imports finished ones
(``session.reattach_all``); the jobs panel (``jobs_panel.py``) lists them.

Records are looked up by key or job id every time (``find``), never held across calls: a file load or undo makes
old RNA references invalid.
"""

from __future__ import annotations

import os
import time
import uuid

import bpy
from bpy.props import BoolProperty, CollectionProperty, FloatProperty, IntProperty, StringProperty

from . import pass_export
from . import neurender_contract as contract

KIND_ANIMATION = "ANIMATION"
KIND_FRAME = "FRAME"

RENDERING_PASSES = "rendering passes"
SUBMITTING = "submitting"
LOST = "lost"
"""The backend does not know the job (any more): nothing to follow; finished frames on disk stay importable."""
ERROR = "error"
"""Never reached the backend (pass render or submit failed)."""

FINAL_STATES = frozenset(contract.JOB_FINAL_STATES) | {LOST, ERROR}


class NeurenderJob(bpy.types.PropertyGroup):
    key: StringProperty(description="Local id of the record (exists before the backend's job id)")
    job_id: StringProperty(name="Job", description="The backend's job id")
    backend_url: StringProperty(name="Backend")
    local_backend: BoolProperty(description="Submitted to the local backend started by the extension")
    upload: BoolProperty(description="The backend got the passes as an upload; frames come back over HTTP")
    kind: StringProperty(default=KIND_ANIMATION)
    frame_start: IntProperty()
    frame_end: IntProperty()
    version: IntProperty()
    pass_dir: StringProperty(subtype="DIR_PATH", options={"PATH_SUPPORTS_BLEND_RELATIVE"})
    out_dir: StringProperty(subtype="DIR_PATH", options={"PATH_SUPPORTS_BLEND_RELATIVE"})
    state: StringProperty(default=RENDERING_PASSES)
    message: StringProperty()
    frames_done: IntProperty()
    frames_total: IntProperty()
    strip: StringProperty(description="Name of the VSE strip this job placed")
    image: StringProperty(description="Name of the image (single-frame renders) this job loaded")
    imported: BoolProperty()
    random_weights: BoolProperty(description="Rendered with the backend's random demo weights (no checkpoint set): "
                                             "the result is noise, not an image")
    created: FloatProperty()

    @property
    def active(self) -> bool:
        return self.state not in FINAL_STATES

    @property
    def label(self) -> str:
        frames = (f"frame {self.frame_start}" if self.kind == KIND_FRAME
                  else f"frames {self.frame_start}-{self.frame_end}")
        done = f" {self.frames_done}/{self.frames_total}" if self.frames_total and self.active else ""
        return f"{pass_export.version_name(self.version)} {frames}: {self.state}{done}"

    @property
    def abs_out_dir(self) -> str:
        return pass_export.from_blend_path(self.out_dir)

    @property
    def abs_pass_dir(self) -> str:
        return pass_export.from_blend_path(self.pass_dir)


def records(scene):
    return getattr(scene, "neurender_jobs", ())


def find(key: str = "", job_id: str = ""):
    """``(scene, record)`` with that local key or backend job id, in any scene of the open file; else ``None``."""
    for scene in bpy.data.scenes:
        for rec in records(scene):
            if (key and rec.key == key) or (job_id and rec.job_id == job_id):
                return scene, rec
    return None


def active(scene) -> list:
    return [r for r in records(scene) if r.active]


def all_records() -> list:
    return [(scene, rec) for scene in bpy.data.scenes for rec in records(scene)]


def new(scene, frame_start: int, frame_end: int, kind: str = KIND_ANIMATION, pass_dir: str = "") -> str:
    """Reserve the next version of ``scene`` (its pass and frame folders are created at once, so no other render
    takes it) and add its record in state 'rendering passes'; returns the record's key.

    ``pass_dir`` (scripts' plain ``passes`` folder) replaces the versioned pass folder.
    """
    version = pass_export.next_version(scene, taken=[r.version for r in records(scene)])
    passes = pass_dir or pass_export.pass_dir(scene, version)
    out = pass_export.frames_dir(scene, version)
    os.makedirs(passes, exist_ok=True)
    os.makedirs(out, exist_ok=True)
    rec = scene.neurender_jobs.add()
    rec.key = uuid.uuid4().hex
    rec.created = time.time()
    rec.kind = kind
    rec.frame_start, rec.frame_end, rec.version = frame_start, frame_end, version
    rec.pass_dir = pass_export.to_blend_path(passes)
    rec.out_dir = pass_export.to_blend_path(out)
    rec.state = RENDERING_PASSES
    return rec.key


FIELDS = ("key", "job_id", "backend_url", "local_backend", "upload", "kind", "frame_start", "frame_end", "version",
          "pass_dir", "out_dir", "state", "message", "frames_done", "frames_total", "strip", "image", "imported",
          "created")


def to_dict(rec) -> dict:
    return {name: getattr(rec, name) for name in FIELDS}


def restore(scene, fields: dict):
    """Add the record ``fields`` (``to_dict``) back to ``scene`` (an undo step took it away); returns it."""
    rec = scene.neurender_jobs.add()
    for name, value in fields.items():
        setattr(rec, name, value)
    return rec


def relativize(blend_path: str) -> None:
    """Store every record's folders relative to ``blend_path`` where they lie under its folder (on save)."""
    for _scene, rec in all_records():
        for attr in ("pass_dir", "out_dir"):
            value = getattr(rec, attr)
            if value and not value.startswith("//"):
                setattr(rec, attr, pass_export.to_blend_path(value, blend_path))


classes = (NeurenderJob,)


def register_props() -> None:
    bpy.types.Scene.neurender_jobs = CollectionProperty(type=NeurenderJob)
    bpy.types.Scene.neurender_jobs_index = IntProperty(default=0)


def unregister_props() -> None:
    del bpy.types.Scene.neurender_jobs_index
    del bpy.types.Scene.neurender_jobs

"""The render hook: with "Neural render on animation render" on, Render Animation (Ctrl+F12) or
``blender -b file.blend -a`` also writes the pass folder and submits the neural render when rendering completes.

The artist's render and its output are left alone. Only an animation render counts: every frame of the range was
written (``render_write``) or, with the artist's Output > Overwrite off, skipped by Blender because its file is
already on disk (a skipped frame fires no ``render_pre``); a still render (F12: ``render_pre`` without
``render_write``; ``-f N`` on the command line) never submits anything. On ``render_complete`` of an
animation the passes are rendered from a temporary scene (``pass_export.export_passes``), the manifest written and
the job submitted; in background mode this happens
right away and waits for the job, in the UI it is posted to the session's main-thread queue (drained by the
timer) because render handlers may run on the render thread there. This module imports ``session``, never the
reverse. Every handler added here is removed in ``unregister`` (bpy 4.5 hangs at exit
otherwise).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Optional

import bpy
from bpy.app.handlers import persistent

from . import headless, jobs, pass_export, pass_job, preflight, session

log = logging.getLogger(__name__)

_pending: Optional[dict] = None
_suspended = 0
_generation = 0  # bumped when another file loads: completions queued for the old file are dropped


@contextlib.contextmanager
def suspended():
    """Renders inside this block are ours (e.g. 'render this frame'); the hook ignores them."""
    global _suspended
    _suspended += 1
    try:
        yield
    finally:
        _suspended -= 1


@persistent
def on_render_init(scene, *_args) -> None:
    global _pending
    _pending = None
    if _suspended or pass_export.is_pass_scene(scene) or not scene.neurender.render_hook:
        return
    step = max(1, scene.frame_step)
    _pending = {"scene": scene.name, "start": scene.frame_start, "end": scene.frame_end,
                "expected": list(range(scene.frame_start, scene.frame_end + 1, step)), "written": [], "started": []}


@persistent
def on_render_pre(scene, *_args) -> None:
    if _pending is not None and _pending["scene"] == scene.name:
        _pending["started"].append(scene.frame_current)


@persistent
def on_render_write(scene, *_args) -> None:
    if _pending is not None and _pending["scene"] == scene.name:
        _pending["written"].append(scene.frame_current)


def _still_on_command_line() -> bool:
    """``blender -b file.blend -f N`` (a still render that writes its file), not ``-a`` (Blender's own arguments come
    before ``--``)."""
    own = sys.argv[: sys.argv.index("--")] if "--" in sys.argv else sys.argv
    return bpy.app.background and any(a in ("-f", "--render-frame") for a in own) and \
        not any(a in ("-a", "--render-anim") for a in own)


def is_animation_render(scene, job: dict) -> bool:
    """Every frame of the range was rendered and written, or skipped by Blender because Overwrite is off and its file
    exists; and no frame was rendered without being written (F12 renders the current frame and writes nothing)."""
    written, started = set(job["written"]), set(job.get("started", ()))
    if started - written or _still_on_command_line():
        return False
    missing = [f for f in job["expected"] if f not in written]
    if missing and scene.render.use_overwrite:
        return False
    return all(os.path.isfile(bpy.path.abspath(scene.render.frame_path(frame=f))) for f in missing)


@persistent
def on_render_complete(scene, *_args) -> None:
    global _pending
    job, _pending = _pending, None
    if job is None or job["scene"] != scene.name:
        return
    if not is_animation_render(scene, job):  # a still render (F12, -f N) or an interrupted animation
        log.info("neurender: not an animation render of frames %d-%d; nothing sent", job["start"], job["end"])
        if len(set(job["written"])) > 1:  # an animation that stopped early (a still render writes one frame at most)
            session.set_message(f"Neural render not sent: not every frame of {job['start']}-{job['end']} was "
                                "rendered.")
        return
    _finish_on_main_thread(job)


@persistent
def on_render_cancel(scene, *_args) -> None:
    global _pending
    job, _pending = _pending, None
    if job is None or job["scene"] != scene.name:
        return
    _finish_on_main_thread(dict(job, cancelled=True))  # the artist hears that nothing was submitted


def _finish_on_main_thread(job: dict) -> None:
    """Run ``complete(job)`` now in background mode; in the UI through the session's one main-thread queue (render
    handlers may run on the render thread there), unless another file was loaded in between."""
    if bpy.app.background:
        complete(job)
        return
    generation = _generation

    def run(*_args) -> None:
        if generation == _generation:
            complete(job)

    session.post_main(run)


@persistent
def on_load_pre(*_args) -> None:
    global _pending, _generation
    _pending = None
    _generation += 1
    session.discard()


def complete(job: dict) -> None:
    """Write the manifest for the rendered range and submit it (waits in background mode if asked)."""
    if job.get("cancelled"):
        session.passes_cancelled()
        return
    scene = bpy.data.scenes.get(job["scene"])
    if scene is None:
        return

    def proceed(scene, settings) -> None:  # the passes (a render job in the UI, Esc cancels; blocking with -b), then submit
        key = jobs.new(scene, job["start"], job["end"])  # its own versioned pass and frame folders

        def submit(scene, manifest) -> None:
            wait = bpy.app.background and scene.neurender.wait_headless
            session.submit_job(scene, manifest.frame_start, manifest.frame_end,
                               wait=wait if bpy.app.background else None, key=key, settings=settings)

        with suspended():
            pass_job.render_then(scene, job["start"], job["end"], jobs.find(key=key)[1].abs_pass_dir, submit,
                                 f"The passes of frames {job['start']}-{job['end']}", key=key)

    preflight.run(scene, job["start"], job["end"], proceed)  # nothing is rendered when a check fails
    if bpy.app.background:  # `blender -b -a`: the exit code tells a farm manager whether the neural render worked
        headless.judge(scene.neurender.wait_headless)


@persistent
def on_load_post(*_args) -> None:
    """The loaded file's job records: follow the running jobs again, import finished ones."""
    session.reattach_all()


@persistent
def on_undo_post(*_args) -> None:
    """Undo and redo restore the scene's job records as they were at that step: jobs submitted since come back."""
    session.reattach_all()


@persistent
def on_save_pre(filepath="", *_args) -> None:
    """Job folders under the .blend's folder are stored relative to it (``//``), so a moved project finds them."""
    if isinstance(filepath, str) and filepath:
        jobs.relativize(filepath)


def reattach_soon() -> None:
    """On register: reattach at the session's next pump (the timer), where the file's data can be read (it is
    restricted while add-ons register)."""
    session.state().reattach_pending = True


_HANDLERS = (
    ("render_init", on_render_init),
    ("render_pre", on_render_pre),
    ("render_write", on_render_write),
    ("render_complete", on_render_complete),
    ("render_cancel", on_render_cancel),
    ("load_pre", on_load_pre),
    ("load_post", on_load_post),
    ("undo_post", on_undo_post),
    ("redo_post", on_undo_post),
    ("save_pre", on_save_pre),
)


def register() -> None:
    for name, fn in _HANDLERS:
        lst = getattr(bpy.app.handlers, name)
        if fn not in lst:
            lst.append(fn)


def unregister() -> None:
    global _pending, _generation
    for name, fn in _HANDLERS:
        lst = getattr(bpy.app.handlers, name)
        while fn in lst:
            lst.remove(fn)
    _pending = None
    _generation += 1

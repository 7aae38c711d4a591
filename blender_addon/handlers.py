"""The render hook: with "Neural render on animation render" on, Render Animation (Ctrl+F12) or
``blender -b file.blend -a`` also writes the pass folder and submits the neural render when rendering completes.

The passes themselves are the render output (configured when the option is switched on). On ``render_complete``
the manifest (cameras, shot-wide depth range) is written and the job submitted; in background mode this happens
right away and waits for the job, in the UI it is deferred to the main-thread timer because render handlers may
run on the render thread there. Every handler added here is removed in ``unregister`` (bpy 4.5 hangs at exit
otherwise).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Optional

import bpy
from bpy.app.handlers import persistent

from . import pass_export, session
from . import neurender_contract as contract

log = logging.getLogger(__name__)

_pending: Optional[dict] = None
_deferred: list[dict] = []
_suspended = 0


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
    if _suspended or not scene.neurender.render_hook:
        return
    if not pass_export.is_configured(scene):
        log.warning("neurender: the render output of %r no longer points at the pass folder; "
                    "switch 'Neural render on animation render' off and on again", scene.name)
        return
    _pending = {"scene": scene.name, "start": scene.frame_start, "end": scene.frame_end}


@persistent
def on_render_complete(scene, *_args) -> None:
    global _pending
    job, _pending = _pending, None
    if job is None or job["scene"] != scene.name:
        return
    if bpy.app.background:
        complete(job)
    else:
        _deferred.append(job)


@persistent
def on_render_cancel(scene, *_args) -> None:
    global _pending
    job, _pending = _pending, None
    if job is None or job["scene"] != scene.name:
        return
    job = dict(job, cancelled=True)  # the artist hears that nothing was submitted (and a watcher can end)
    if bpy.app.background:
        complete(job)
    else:
        _deferred.append(job)


@persistent
def on_load_pre(*_args) -> None:
    global _pending
    _pending = None
    _deferred.clear()
    session.discard()


def run_deferred() -> None:
    """Called from the main-thread timer: finish hooked renders that completed (or were cancelled) in the UI."""
    while _deferred:
        complete(_deferred.pop(0))


def complete(job: dict) -> None:
    """Write the manifest for the rendered range and submit it (waits in background mode if asked)."""
    if job.get("cancelled"):
        session.passes_cancelled()
        return
    scene = bpy.data.scenes.get(job["scene"])
    if scene is None:
        return
    try:
        folder = pass_export.pass_dir(scene)
        manifest = pass_export.build_manifest(scene, folder, job["start"], job["end"])
        pass_export.write_manifest(manifest, folder)
        wait = bpy.app.background and scene.neurender.wait_headless
        session.submit_job(scene, manifest.frame_start, manifest.frame_end, wait=wait if bpy.app.background else None)
    except contract.ContractError as exc:
        session.set_message("", f"Neural render not submitted: {exc}")


_HANDLERS = (
    ("render_init", on_render_init),
    ("render_complete", on_render_complete),
    ("render_cancel", on_render_cancel),
    ("load_pre", on_load_pre),
)


def register() -> None:
    for name, fn in _HANDLERS:
        lst = getattr(bpy.app.handlers, name)
        if fn not in lst:
            lst.append(fn)


def unregister() -> None:
    global _pending
    for name, fn in _HANDLERS:
        lst = getattr(bpy.app.handlers, name)
        while fn in lst:
            lst.remove(fn)
    _pending = None
    _deferred.clear()

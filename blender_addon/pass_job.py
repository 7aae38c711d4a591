"""The pass render without blocking Blender: in the UI it runs as Blender's own render job (progress in the status bar
and the render view, Esc cancels it); in background mode (``blender -b``) it blocks, as everything there does.

``start(scene, frame_start, frame_end, folder, on_done)`` makes the temporary pass scene
(``pass_export.make_pass_scene``), starts ``render.render('INVOKE_DEFAULT', animation=True)`` on it and returns.
A main-thread timer then waits until no render job runs any more (``bpy.app.is_job_running('RENDER')``; the job's
own end-of-render work uses the scene, so it is never removed earlier), writes the manifest when every frame was
rendered, removes the temporary scene and calls ``on_done(manifest, None)``, or ``on_done(None, error)`` when the
render was cancelled (Esc) or failed. No render handler is registered for this, so none can be left behind.
A render job still running when it is asked for (the artist's own Ctrl+F12 ending) is waited for first. When the
render job cannot start (no window, INVOKE refused) the render runs blocking instead.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

import bpy

from . import pass_export, session
from . import neurender_contract as contract

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
RENDERING = "rendering passes"
"""``WindowManager.neurender.job_state`` while the pass render job runs (not final: the modal watcher waits)."""

Done = Callable[[Optional["contract.PassManifest"], Optional[BaseException]], None]


class PassRenderStopped(RuntimeError):
    """The pass render ended before every frame was written (Esc, or the render failed)."""


def render_job_running() -> bool:
    """Whether a render job runs (replaceable in tests: headless there is never one)."""
    return bool(bpy.app.is_job_running("RENDER"))


def _window():
    wm = bpy.context.window_manager
    windows = list(wm.windows) if wm is not None else []
    return bpy.context.window or (windows[0] if windows else None)


def _blocking(scene, frame_start, frame_end, folder, on_done: Done, half: bool, fast) -> None:
    try:
        manifest = pass_export.export_passes(scene, frame_start, frame_end, half=half, folder=folder, fast=fast)
    except (contract.ContractError, OSError, RuntimeError) as exc:
        on_done(None, exc)
        return
    on_done(manifest, None)


def start(scene, frame_start: int, frame_end: int, folder: str, on_done: Done, *, half: bool = False, fast=None,
          background: Optional[bool] = None, invoke=None, schedule=None) -> None:
    """Render the passes of ``frame_start..frame_end`` into ``folder``; ``on_done`` runs on the main thread.

    ``background`` (default: ``bpy.app.background``) renders blocking. ``invoke`` (default ``bpy.ops.render.render``)
    and ``schedule`` (default ``bpy.app.timers.register``) are replaceable for tests, where no window exists."""
    background = bpy.app.background if background is None else background
    window = None if background else _window()
    if background or (window is None and invoke is None):
        _blocking(scene, frame_start, frame_end, folder, on_done, half, fast)
        return
    timer = schedule or (lambda fn: bpy.app.timers.register(fn, first_interval=POLL_SECONDS))
    if render_job_running():  # e.g. the artist's own Ctrl+F12 is still ending: start once it has
        scene_name = scene.name

        def retry() -> Optional[float]:
            if render_job_running():
                return POLL_SECONDS
            target = bpy.data.scenes.get(scene_name)
            if target is None:
                on_done(None, PassRenderStopped(f"the scene {scene_name!r} is gone"))
            else:
                start(target, frame_start, frame_end, folder, on_done, half=half, fast=fast, background=False,
                      invoke=invoke, schedule=schedule)
            return None

        timer(retry)
        return
    fast = (not pass_export.needs_beauty(scene)) if fast is None else fast
    try:
        pass_export.prepare_folder(folder, frame_start, frame_end)
        tmp = pass_export.make_pass_scene(scene, frame_start, frame_end, folder, fast=fast, half=half)
    except (contract.ContractError, OSError, RuntimeError) as exc:
        on_done(None, exc)
        return
    name = tmp.name
    render = invoke or bpy.ops.render.render
    try:
        override = {"scene": tmp} if window is None else {"window": window, "scene": tmp}
        with bpy.context.temp_override(**override):
            result = render("INVOKE_DEFAULT", animation=True, scene=name, layer=tmp.view_layers[0].name)
    except RuntimeError as exc:  # e.g. "render already running" reported as an error
        log.info("the pass render job could not start (%s); rendering blocking", exc)
        result = set()
    if not ({"RUNNING_MODAL", "FINISHED"} & set(result)):
        pass_export.remove_pass_scene(tmp)
        _blocking(scene, frame_start, frame_end, folder, on_done, half, fast)
        return
    log.info("pass render of frames %d-%d running as a render job (Esc cancels it)", frame_start, frame_end)

    def poll() -> Optional[float]:
        if render_job_running():
            return POLL_SECONDS
        _finish(name, folder, frame_start, frame_end, on_done)
        return None

    timer(poll)


def _finish(name: str, folder: str, frame_start: int, frame_end: int, on_done: Done) -> None:
    """Main thread, after the render job ended: the manifest if every frame was written; the pass scene goes."""
    tmp = bpy.data.scenes.get(name)
    if tmp is None or not pass_export.is_pass_scene(tmp):
        on_done(None, PassRenderStopped("the temporary pass scene disappeared during the render"))
        return
    try:
        written = pass_export.frames_on_disk(folder, frame_start, frame_end)
        total = frame_end - frame_start + 1
        if len(written) < total:
            raise PassRenderStopped(f"the pass render stopped after {len(written)} of {total} frames "
                                    "(cancelled or failed); nothing was sent to the neural renderer")
        manifest = pass_export.finish_passes(tmp, folder, frame_start, frame_end)
    except (PassRenderStopped, contract.ContractError, OSError, RuntimeError) as exc:
        pass_export.remove_pass_scene(tmp)
        on_done(None, exc)
        return
    pass_export.remove_pass_scene(tmp)
    on_done(manifest, None)



def render_then(scene, frame_start: int, frame_end: int, folder: str, then: Callable[[object, object], None],
                label: str, key: str = "") -> None:
    """The pass render with the artist told what happens, then ``then(scene, manifest)`` on the main thread (the
    scene looked up again by name). A failure is reported as '<label> could not be rendered: <why>' and, with
    ``key``, stored on that job record (``jobs.py``)."""
    scene_name = scene.name
    status = bpy.context.window_manager.neurender
    status.job_id, status.job_state, status.error = "", RENDERING, ""
    session.set_message(f"Rendering {label[0].lower()}{label[1:]}...")

    def rendered(manifest, err) -> None:
        status = bpy.context.window_manager.neurender
        if err is not None:
            if status.job_state == RENDERING:
                status.job_state = contract.JOB_CANCELLED if isinstance(err, PassRenderStopped) else contract.JOB_FAILED
            session.record_failed(key, f"{label} could not be rendered: {err}",
                                  contract.JOB_CANCELLED if isinstance(err, PassRenderStopped) else "")
            session.set_message("", f"{label} could not be rendered: {err}")
            return
        target = bpy.data.scenes.get(scene_name)
        if target is None:
            status.job_state = contract.JOB_FAILED
            session.set_message("", f"The scene {scene_name!r} is gone; nothing was sent to the neural renderer")
            return
        try:
            then(target, manifest)
        except (contract.ContractError, OSError, RuntimeError) as exc:
            session.record_failed(key, str(exc))
            status.job_state = contract.JOB_FAILED
            session.set_message("", f"Neural render not submitted: {exc}")

    start(scene, frame_start, frame_end, folder, rendered)

"""What the artist sees while a neural render runs: progress, the live preview image, frames as they are written,
and the honest state of the result (random weights). Main thread only, except the functions handed to the worker.

The preview is fetched by the worker thread (``GET /jobs/{id}/preview``) whenever a snapshot reports a newer
``preview_step``, written to a temporary file and (re)loaded on the main thread into the image
``Neural Render Preview``, which the artist opens in any Image Editor; the UI never waits for it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Optional

import bpy

from . import progress as progress_mod
from . import vse

log = logging.getLogger(__name__)

PREVIEW_IMAGE = "Neural Render Preview"
RANDOM_WEIGHTS_STRIP = "neurender RANDOM WEIGHTS (noise)"
RANDOM_WEIGHTS_NOTE = "RANDOM WEIGHTS: the output is noise, not an image (set a checkpoint in the preferences)"


class _Live:
    def __init__(self) -> None:
        self.job_id = ""
        self.tracker = progress_mod.Tracker()
        self.preview_wanted = 0  # newest preview step reported
        self.preview_shown = 0
        self.preview_inflight = False
        self.frames_placed = 0


_live = _Live()


def reset(job_id: str = "") -> None:
    global _live
    _live = _Live()
    _live.job_id = job_id


def random_weights(job: dict) -> bool:
    """The result is noise: the backend said so, or the job ran without a checkpoint (the built-in demo model)."""
    p = job.get("progress") or {}
    settings = job.get("settings") or {}
    return bool(p.get("random_weights")) or ("model" in settings and not settings.get("model"))


def result_note(job: dict) -> str:
    return f" — {RANDOM_WEIGHTS_NOTE}" if random_weights(job) else ""


def on_snapshot(status, job: dict, scene=None, worker=None, make_client=None, blocking: bool = False,
                version=None) -> str:
    """Apply one job snapshot to the status (monotonic progress, device, random weights); start a preview fetch if
    a newer preview exists; put newly written frames on the strip. Returns the progress line."""
    job_id = str(job.get("id", ""))
    if job_id != _live.job_id:
        reset(job_id)
        if status is not None:  # the previous job's preview step (and device) are not this job's
            status.preview_step, status.job_device = 0, ""
    value = _live.tracker.update(job)
    p = job.get("progress") or {}
    if status is not None:
        status.progress = value
        status.phase = _live.tracker.phase
        status.progress_text = _live.tracker.text
        status.eta = progress_mod.format_duration(_live.tracker.eta) if _live.tracker.eta is not None else ""
        status.random_weights = random_weights(job)
        if p.get("device"):
            status.job_device = f"{p['device']}, {p.get('dtype') or '?'}"
    step = int(p.get("preview_step") or 0)
    if step > _live.preview_wanted:
        _live.preview_wanted = step
    if worker is not None and make_client is not None:
        fetch_preview(worker, make_client)
    if scene is not None and job.get("state") not in ("done", "failed", "cancelled"):
        _place_written(scene, job, version)
    return _live.tracker.text


def _place_written(scene, job: dict, version=None) -> None:
    """Finished frames appear in the strip as they are written (the final strip is placed when the job is done)."""
    out_dir = job.get("out_dir") or ""
    done = job.get("frames_downloaded", job.get("frames_done")) or []
    if len(done) <= _live.frames_placed or not out_dir:
        return
    frames = [f for f in vse.result_frames(out_dir) if f in set(done)]
    if not frames:
        return
    try:
        vse.place_result(scene, out_dir, frames, version=version)  # the render's own versioned strip
        _live.frames_placed = len(done)
    except Exception as exc:  # noqa: BLE001 - a partial strip is a convenience; the final one reports errors
        log.warning("could not show the frames written so far: %s", exc)


def fetch_preview(worker, make_client) -> None:
    """If a newer preview than the one shown exists, fetch it on the worker thread and show it when it arrives."""
    live = _live
    if live.preview_inflight or live.preview_wanted <= live.preview_shown or not live.job_id:
        return
    try:
        c = make_client()
    except Exception:  # noqa: BLE001 - no backend now: the next snapshot tries again
        return
    live.preview_inflight = True
    job_id = live.job_id

    def work():
        return c.preview_png(job_id)

    def done(result, err) -> None:
        live.preview_inflight = False
        if err is not None or live is not _live:
            if err is not None:
                log.debug("preview not fetched: %s", err)
            return
        step, data = result
        show_preview(data, max(step, live.preview_shown + 1) if step == 0 else step)

    worker.submit(work, done)


def _preview_path() -> str:
    folder = os.path.join(tempfile.gettempdir(), f"neurender-preview-{os.getpid()}")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, "preview.png")


def show_preview(png: bytes, step: int) -> Optional[bpy.types.Image]:
    """Load ``png`` into the image ``Neural Render Preview`` (created once; reloaded in place afterwards)."""
    path = _preview_path()
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(png)
    os.replace(tmp, path)
    image = bpy.data.images.get(PREVIEW_IMAGE)
    if image is None:
        image = bpy.data.images.load(path, check_existing=False)
        image.name = PREVIEW_IMAGE
    else:
        image.filepath = path
        image.reload()
    image["neurender_preview_step"] = step
    _live.preview_shown = step
    wm = bpy.context.window_manager
    if wm is not None:
        wm.neurender.preview_step = step
        for window in wm.windows if not bpy.app.background else ():
            for area in window.screen.areas:
                if area.type in ("IMAGE_EDITOR", "VIEW_3D"):
                    area.tag_redraw()
    return image

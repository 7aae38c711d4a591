"""Pre-flight: the hard gate before any pass render. Every check that can fail without rendering runs first, and the
first failure is reported as one sentence; nothing is rendered or sent then.

Checked, in order: the shot's settings (``contract.RenderSettings.check``), an active camera, a sane frame range
(1..``contract.MAX_FRAMES`` frames) and resolution (the neural frames 8..``contract.MAX_RESOLUTION`` px a side), every
model path when the backend reads this computer's disk, an output folder inside a local backend's Allowed root, a
writable output folder (tested with a temporary file in the folder or the nearest existing folder above it, which is
not created), then the backend: a local backend is
started when the preferences say so, and the backend must answer and speak this add-on's protocol.

``run(scene, frame_start, frame_end, proceed)`` does the bpy checks on the main thread, the network check on the
worker (inline in background mode, where the worker blocks), then calls ``proceed(scene)`` on the main thread. The
artist's next report is the failure sentence (``session.set_message('', sentence)``) or whatever ``proceed`` does.
This module is the gate only; the advice shown in the panel (random weights, no ControlNet...) lives elsewhere.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Callable, Optional

import bpy

from . import client, messages, pass_export, preferences, properties, session
from . import neurender_contract as contract

log = logging.getLogger(__name__)

CHECKING = "checking"
"""``WindowManager.neurender.job_state`` while the checks run (not final, so the modal watcher keeps waiting)."""

LOCAL_START_TIMEOUT = 120.0


class PreflightError(contract.ContractError):
    """A check failed before anything was rendered; ``str(err)`` is the sentence for the artist."""


def _frames_label(frame_start: int, frame_end: int) -> str:
    return f"frame {frame_start}" if frame_start == frame_end else f"frames {frame_start}-{frame_end}"


def writable_folder_error(folder: str) -> str:
    """Why ``folder`` cannot be written (empty when it can), creating nothing that is not already there."""
    probe = os.path.abspath(folder)
    while not os.path.isdir(probe):  # the nearest existing folder decides whether the rest can be made
        if os.path.exists(probe):
            return f"{probe} is a file, not a folder"
        parent = os.path.dirname(probe)
        if parent == probe:
            return "no part of the path exists"
        probe = parent
    try:
        with tempfile.NamedTemporaryFile(prefix=".neurender-write-test-", dir=probe):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return ""


def local_checks(scene, prefs, frame_start: int, frame_end: int) -> "contract.RenderSettings":
    """Main thread: the shot's checked settings, or ``PreflightError`` for the first problem found."""
    what = _frames_label(frame_start, frame_end)
    try:
        settings = properties.to_settings(scene, prefs, frames=f"{frame_start}-{frame_end}")
    except contract.ContractError as exc:
        raise PreflightError(f"Bad settings: {exc}") from None
    if scene.camera is None:
        raise PreflightError(f"The passes of {what} cannot be rendered: the scene {scene.name!r} has no active "
                             "camera; set one in the Scene properties.")
    count = frame_end - frame_start + 1
    if not 1 <= count <= contract.MAX_FRAMES:
        raise PreflightError(f"Frames {frame_start}-{frame_end} make {count} frames; neurender renders 1 to "
                             f"{contract.MAX_FRAMES} frames per job, so change the scene's frame range.")
    w, h = pass_export.render_size(scene)
    out_w, out_h = settings.width or w // 8 * 8, settings.height or h // 8 * 8  # for the sentence only
    try:
        contract.render_size(settings, w, h)  # the one size rule, as the backend applies it
        if min(w, h) < 8:  # the passes themselves (the backend reads them at this size)
            raise contract.ContractError("render too small")
    except contract.ContractError:
        raise PreflightError(f"The neural frames would be {out_w}x{out_h} pixels (render size {w}x{h}) but must be "
                             f"8 to {contract.MAX_RESOLUTION} a side, so change the resolution or set Width and "
                             "Height in the Neural Render panel.")
    url = session.state().local.url if prefs.start_local and session.state().local.running else prefs.backend_url
    if prefs.shares_disk(url):  # the backend opens these very paths: a missing one fails here, not after the passes
        named = [("checkpoint", settings.model)] + [(f"{u.kind} ControlNet", u.model) for u in settings.controlnets]
        named += [("LoRA", lora.path) for lora in getattr(settings, "loras", ())]
        named += [("embedding", path) for path in getattr(settings, "embeddings", ())]
        named.append(("reference image", getattr(settings, "reference_image", "")))
        for label, path in named:
            if path and not os.path.exists(path):
                raise PreflightError(messages.word("model_missing", f"the {label} {path} does not exist"))
    root = pass_export.output_root(scene)
    if prefs.start_local:  # the local backend is started with --root <Allowed root>: it refuses folders outside
        allowed = os.path.realpath(prefs.resolved_root())
        data_dir = os.path.realpath(bpy.utils.extension_path_user(__package__, path="backend", create=True))
        out = os.path.realpath(root)
        if not any(out == a or out.startswith(a.rstrip(os.sep) + os.sep) for a in (allowed, data_dir)):
            raise PreflightError(messages.word("path_outside_roots", f"the output folder {out} is not inside the "
                                                                     f"Allowed root {allowed}"))
    problem = writable_folder_error(root)
    if problem:
        raise PreflightError(f"The output folder {root} cannot be written ({problem}), so choose another Output "
                             "folder in the Neural Render panel.")
    return settings


class _Target:
    """Plain values for the worker: which backend to ask (no bpy there)."""

    def __init__(self, prefs) -> None:
        st = session.state()
        self.local = st.local if prefs.start_local else None
        self.url = prefs.backend_url
        self.token, self.force = prefs.token, prefs.force_version

    def check(self) -> dict:
        """Worker thread: wait for a local backend to listen, then compare protocols (``client.BackendError``)."""
        if self.local is not None:
            if not self.local.wait_ready(LOCAL_START_TIMEOUT):
                raise client.BackendError(
                    f"The local backend stopped while starting; see {self.local.log_path}: "
                    f"{self.local.log_tail(3)}", client.UNREACHABLE)
            self.url = self.local.url
        return client.Client(self.url, self.token).check_version(force=self.force)


def _fail(sentence: str) -> None:
    status = properties.status()
    if status is not None:
        status.job_state = contract.JOB_FAILED
    session.set_message("", sentence)


def run(scene, frame_start: int, frame_end: int, proceed: Callable[[object, object], None]) -> Optional[str]:
    """Check everything, then ``proceed(scene, settings)`` on the main thread (``settings``: the shot's checked
    ``contract.RenderSettings`` as they were when the artist pressed Render; submit them as they are). Returns the failure sentence when it is known at
    once (always in background mode), else None; a later failure is reported through the session's status."""
    prefs = preferences.get()
    status = properties.status()
    if status is not None:  # a fresh, non-final state: the modal watcher waits for the checks and the job
        status.job_id, status.job_state, status.error = "", CHECKING, ""
    try:
        settings = local_checks(scene, prefs, frame_start, frame_end)
        if prefs.start_local:
            session._ensure_local(prefs)  # starts 'neurender serve' (main thread: reads the extension's folder)
    except (contract.ContractError, client.BackendError) as exc:
        _fail(str(exc))
        return str(exc)
    target = _Target(prefs)
    scene_name = scene.name
    outcome: dict = {}

    def checked(info, err) -> None:
        session._connected(info, err, None)  # the panel's connection line follows what the check found
        if err is not None:
            outcome["error"] = session._artist_message(err)
            _fail(outcome["error"])
            return
        target_scene = bpy.data.scenes.get(scene_name)  # looked up again: the scene may be gone by now (UI mode)
        if target_scene is None:
            outcome["error"] = f"The scene {scene_name!r} is gone; nothing was rendered."
            _fail(outcome["error"])
            return
        log.info("pre-flight passed for %s of %s (backend %s)", _frames_label(frame_start, frame_end), scene_name,
                 info.get("backend_version", "?"))
        proceed(target_scene, settings)  # the settings checked here travel on: never built or checked again

    session.set_message("Checking the scene and the neurender backend...")
    session.state().worker.submit(target.check, checked)
    return outcome.get("error")

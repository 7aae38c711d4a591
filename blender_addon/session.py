"""The add-on's one piece of runtime state: the worker, the watched job, the local backend.

Everything here runs on Blender's main thread except the functions handed to the worker, which only do
network calls. ``discard()`` is the single function that drops this state (called on unregister and load_pre).
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Optional

import bpy

from . import backend_process, client, pass_export, preferences, properties, remote, vse, worker
from . import neurender_contract as contract

log = logging.getLogger(__name__)

TIMER_INTERVAL = 0.25
MOVIE_NAME = "neurender.mp4"


class _State:
    def __init__(self) -> None:
        self.worker = worker.Worker(blocking=bpy.app.background)
        self.watcher: Optional[worker.JobWatcher] = None
        self.local = backend_process.LocalBackend()
        self.scene_name = ""
        self.last_job: dict = {}


_state: Optional[_State] = None


def state() -> _State:
    global _state
    if _state is None:
        _state = _State()
    return _state


def discard() -> None:
    """Forget the watched job and stop polling (the local backend keeps running)."""
    st = _state
    if st is not None and st.watcher is not None:
        st.watcher.stop()
        st.watcher = None


def shutdown() -> None:
    global _state
    discard()
    if _state is not None:
        _state.local.stop()
    _state = None


# -- status ------------------------------------------------------------------------------------------------------

def _status():
    wm = bpy.context.window_manager
    return wm.neurender if wm is not None else None


def set_message(text: str, error: str = "") -> None:
    st = _status()
    if st is not None and st.message == text and st.error == error:
        return  # the same snapshot again: nothing to log or redraw
    if st is not None:
        st.message = text
        st.error = error
    if error:
        log.error("%s", error)
    elif text:
        log.info("%s", text)
    _redraw(text if not error else error)


def _redraw(status_text: Optional[str] = None) -> None:
    wm = bpy.context.window_manager
    if wm is None or bpy.app.background:
        return
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()
        if status_text is not None:
            try:
                window.workspace.status_text_set_internal(status_text or None)
            except (AttributeError, RuntimeError):
                pass


# -- backend -----------------------------------------------------------------------------------------------------

def make_client(prefs=None) -> client.Client:
    prefs = prefs or preferences.get()
    st = state()
    if prefs.start_local:
        if not st.local.running:
            raise client.BackendError("The local backend is not running; press Connect to start it.",
                                      client.UNREACHABLE)
        return client.Client(st.local.url, prefs.token)
    return client.Client(prefs.backend_url, prefs.token)


def _ensure_local(prefs) -> None:
    st = state()
    if not prefs.start_local or st.local.running:
        return
    data_dir = bpy.utils.extension_path_user(__package__, path="backend", create=True)
    try:
        st.local.start(bpy.path.abspath(prefs.backend_env), data_dir, prefs.resolved_root(), prefs.local_port,
                       model_roots=prefs.model_folders())
    except FileNotFoundError as exc:
        raise client.BackendError(str(exc), client.UNREACHABLE) from None
    except OSError as exc:  # e.g. the command is not executable
        raise client.BackendError(f"The local backend could not be started: {exc}", client.UNREACHABLE) from None


def connect(on_done=None) -> None:
    """Start the local backend if asked, then check its version; status on the WindowManager."""
    prefs = preferences.get()
    try:
        _ensure_local(prefs)
    except client.BackendError as exc:
        _connected(None, exc, on_done)
        return
    st = state()
    # bpy data is read here, on the main thread; the worker only gets plain values
    local = st.local if prefs.start_local else None
    force, url, token = prefs.force_version, prefs.backend_url, prefs.token

    def work():
        if local is not None and not local.wait_ready(120.0):
            raise client.BackendError(
                f"The local backend stopped while starting; see {local.log_path}: {local.log_tail(3)}",
                client.UNREACHABLE)
        return client.Client(local.url if local else url, token).check_version(force=force)

    set_message("Connecting to the neurender backend...")
    st.worker.submit(work, lambda info, err: _connected(info, err, on_done))


def _connected(info, err, on_done) -> None:
    st = _status()
    if err is not None:
        if st is not None:
            st.connected = False
            st.backend_info = ""
        set_message("", _artist_message(err))
    else:
        models = info.get("models") or {}
        text = (f"neurender {info.get('backend_version', '?')} (protocol {info.get('protocol_version')}), "
                f"device {info.get('device', '?')}" + (f", model {models.get('model')}" if models.get("model") else ""))
        if st is not None:
            st.connected = True
            st.backend_info = text
        set_message(f"Connected: {text}")
    if on_done is not None:
        on_done(info, err)


def _artist_message(err: BaseException) -> str:
    if isinstance(err, (client.BackendError, contract.ContractError)):
        return str(err)
    return f"Unexpected error: {err.__class__.__name__}: {err}"


# -- jobs --------------------------------------------------------------------------------------------------------

def submit_job(scene, frame_start: int, frame_end: int, wait: Optional[bool] = None) -> None:
    """Submit the scene's pass folder (already written) as a job for ``frame_start..frame_end``.

    Raises ``contract.ContractError`` for bad settings before anything is sent. In background mode (or with
    ``wait``) it blocks until the job is final.
    """
    prefs = preferences.get()
    frames = f"{frame_start}-{frame_end}"
    settings = properties.to_settings(scene, prefs, frames=frames)
    folder = pass_export.pass_dir(scene)
    if not os.path.isfile(os.path.join(folder, contract.MANIFEST_NAME)):
        raise contract.ContractError(f"the pass folder {folder} has no {contract.MANIFEST_NAME}; render passes first")
    out_dir = pass_export.frames_dir(scene)
    st = state()
    discard()
    st.scene_name = scene.name
    status = _status()
    if status is not None:
        status.job_id, status.job_state, status.error, status.out_dir = "", "submitting", "", out_dir
        status.frames_done, status.frames_total, status.step, status.steps_total, status.progress = 0, 0, 0, 0, 0.0
    blocking = st.worker.blocking if wait is None else wait

    try:
        c = make_client(prefs)
    except client.BackendError as exc:
        _job_update(None, exc)
        return
    force = prefs.force_version
    upload = not prefs.shares_disk(c.base_url)
    settings_dict = settings.to_dict()

    def work():
        c.check_version(force=force)
        if not upload:
            return c, c.submit(folder, settings_dict, out_dir)
        return c, _upload(c, folder, settings_dict, st.worker)

    def submitted(result, err):
        if err is not None:
            _job_update(None, err)
            return
        c, job = result
        if upload:  # frames come back over HTTP into the scene's own output folder
            fetch = remote.FrameDownloader(c, job["id"], out_dir).poll
            job = dict(job, out_dir=out_dir, server_out_dir=job.get("out_dir", ""), frames_downloaded=[])
        else:
            fetch = functools.partial(c.job, job["id"])
        _job_update(job, None)

        def on_update(snapshot, error) -> None:
            if st.watcher is watcher:  # a snapshot queued before a newer submit (or discard) is dropped
                _job_update(snapshot, error)

        watcher = worker.JobWatcher(st.worker, fetch, on_update)
        st.watcher = watcher
        if blocking:
            watcher.wait()
        elif st.worker.blocking:  # background mode without waiting: no timers would drain a thread
            set_message(f"Submitted job {job.get('id')}; not waiting for it (background mode)")
        else:
            watcher.start()

    set_message(f"Submitting frames {frames}" + (" (uploading the pass folder)..." if upload else "..."))
    if blocking and not st.worker.blocking:
        try:
            submitted(work(), None)
        except Exception as exc:  # noqa: BLE001 - reported like the async path
            submitted(None, exc)
    else:
        st.worker.submit(work, submitted)


def _upload(c: client.Client, folder: str, settings: dict, w: worker.Worker) -> dict:
    """Worker thread: zip the pass folder next to it, upload it with the settings, delete the zip; the new Job."""
    c.check_access()  # a wrong token is reported before minutes of zipping and uploading
    shown = [-1]

    def report(what: str):
        def progress(done: int, total: int) -> None:
            percent = int(100 * done / max(1, total))
            if percent // 10 != shown[0]:  # at most ~10 messages per phase
                shown[0] = percent // 10
                w.post(lambda *_: set_message(f"{what} the pass folder: {percent}%"))
        return progress

    zip_path = os.path.join(os.path.dirname(folder), f".neurender-upload-{os.getpid()}.zip")
    try:
        size = remote.zip_pass_folder(folder, zip_path, report("Zipping"))
        shown[0] = -1
        log.info("uploading %s (%.1f MB) to %s", zip_path, size / 1e6, c.base_url)
        return c.submit_upload(zip_path, settings, report("Uploading"))
    finally:
        try:
            os.remove(zip_path)
        except OSError:
            pass


def _job_update(job, err) -> None:
    status = _status()
    st = state()
    if err is not None:
        if status is not None:
            status.job_state = contract.JOB_FAILED
        set_message("", _artist_message(err))
        return
    st.last_job = job
    state_ = job.get("state", "")
    p = job.get("progress") or {}
    if status is not None:
        status.job_id = str(job.get("id", ""))
        status.job_state = state_
        status.frames_done = int(p.get("frames_done", 0))
        status.frames_total = int(p.get("frames_total", 0))
        status.step = int(p.get("step", 0))
        status.steps_total = int(p.get("steps_total", 0))
        total = max(1, status.frames_total) * max(1, status.steps_total)
        status.progress = min(1.0, (status.frames_done * max(1, status.steps_total) + status.step) / total)
        if job.get("out_dir"):
            status.out_dir = job["out_dir"]
    if state_ == contract.JOB_DONE:
        _finish(job)
    elif state_ == contract.JOB_FAILED:
        set_message("", client.job_failure_message(job))
    elif state_ == contract.JOB_CANCELLED:
        kept = job.get("frames_downloaded", job.get("frames_done")) or []
        set_message(f"Cancelled; {len(kept)} finished frames kept in {job.get('out_dir')}")
    else:
        set_message(progress_text(job))


def passes_cancelled() -> None:
    """The pass render of a hooked animation render was cancelled: nothing is submitted."""
    status = _status()
    if status is not None and not status.job_id:  # 'rendering passes' ends, so the modal watcher stops too
        status.job_state = contract.JOB_CANCELLED
    set_message("Render cancelled; nothing was sent to the neural renderer")


def progress_text(job: dict) -> str:
    p = job.get("progress") or {}
    text = (f"Neural render {job.get('state')}: frame {p.get('frames_done', 0)}/{p.get('frames_total', 0)}, "
            f"step {p.get('step', 0)}/{p.get('steps_total', 0)}")
    if p.get("phase"):
        text += f" ({p['phase']})"
    if "frames_downloaded" in job:
        text += f", {len(job['frames_downloaded'])} downloaded"
    return text


def _finish(job: dict) -> None:
    st = state()
    scene = bpy.data.scenes.get(st.scene_name)
    out_dir = job.get("out_dir") or ""
    if scene is None:
        set_message(f"Done; frames in {out_dir} (the scene is gone, no strip added)")
        return
    first, last = job.get("frame_start"), job.get("frame_end")
    requested = (job.get("settings") or {}).get("frames") or ""
    if requested:
        first, last = contract.parse_frame_range(requested)
    frames = [f for f in vse.result_frames(out_dir)
              if (first is None or f >= first) and (last is None or f <= last)]
    try:
        strip = vse.place_result(scene, out_dir, frames)
    except (contract.ContractError, RuntimeError) as exc:
        set_message("", f"The neural frames could not be loaded into the sequencer: {exc}")
        return
    movie = ""
    if scene.neurender.make_movie:
        try:
            movie = " and " + vse.write_movie(scene, out_dir, frames, os.path.join(out_dir, MOVIE_NAME))
        except (contract.ContractError, RuntimeError) as exc:
            set_message("", f"The movie could not be written: {exc}")
            return
    set_message(f"Done: {len(strip.elements)} frames on VSE channel {strip.channel} ({out_dir}){movie}")


def cancel_job() -> bool:
    """Ask the backend to stop the watched job at its next step; False when no job is running."""
    status = _status()
    job_id = status.job_id if status is not None else ""
    if not job_id or (status.job_state in contract.JOB_FINAL_STATES):
        return False
    try:
        c = make_client()
    except client.BackendError as exc:
        _job_update(None, exc)
        return False

    def work():
        return c.cancel(job_id)

    set_message("Cancelling...")
    state().worker.submit(work, lambda job, err: _job_update(job, err) if err is not None else None)
    return True


# -- main-thread queue and pump ---------------------------------------------------------------------------------

def post_main(fn) -> None:
    """From any thread: run ``fn(None, None)`` on the main thread at the next ``pump`` (the worker's one queue)."""
    state().worker.post(fn)


def pump() -> Optional[float]:
    """``bpy.app.timers`` function: run the main-thread queue (worker callbacks, finished hooked renders); watch
    the local backend."""
    st = _state
    if st is None:
        return TIMER_INTERVAL
    try:
        st.worker.drain()
        code = st.local.poll()
        if code is not None and not st.local.exit_reported:
            st.local.exit_reported = True
            status = _status()
            if status is not None:
                status.connected = False
            set_message("", f"The local backend exited (code {code}): {st.local.log_tail(3)}")
    except Exception:  # noqa: BLE001 - the timer must survive
        log.exception("neurender timer")
    return TIMER_INTERVAL

"""The add-on's one piece of runtime state: the worker, the watched job, the local backend.

Everything here runs on Blender's main thread except the functions handed to the worker, which only do
network calls. ``discard()`` is the single function that drops this state (called on unregister and load_pre).
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from typing import Optional

import bpy

from . import advice, backend_process, client, live, messages, pass_export, preferences, properties, remote, vse, worker
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
            raise client.error(messages.LOCAL_BACKEND, f"it stopped while starting: {local.log_tail(3)}")
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
        _check_model_paths(prefs_or_none())
    if on_done is not None:
        on_done(info, err)


def prefs_or_none():
    try:
        return preferences.get()
    except (KeyError, AttributeError):
        return None


def _check_model_paths(prefs) -> None:
    """Connect also checks the model paths of the preferences, where the backend shares this computer's disk."""
    if prefs is None:
        return
    problems = advice.model_path_problems(prefs)
    if problems:
        set_message("", "Connected, but " + "; ".join(problems))


def _artist_message(err: BaseException) -> str:
    """The one sentence shown for ``err``; its full text goes to ``status.error_detail`` (Copy Message)."""
    st = _status()
    if isinstance(err, client.BackendError):
        text, detail = str(err), err.detail
    elif isinstance(err, contract.ContractError):
        text = detail = f"A setting in the Neural Render panel is not valid: {err}"
    else:
        text = f"Unexpected error in the add-on: {err.__class__.__name__}: {err}"
        detail = text
    if st is not None:
        st.error_detail = detail
    return text


# -- jobs --------------------------------------------------------------------------------------------------------

def submit_job(scene, frame_start: int, frame_end: int, wait: Optional[bool] = None) -> None:
    """Submit the scene's pass folder (already written) as a job for ``frame_start..frame_end``.

    Raises ``contract.ContractError`` for bad settings before anything is sent. In background mode (or with
    ``wait``) it blocks until the job is final.
    """
    prefs = preferences.get()
    frames = f"{frame_start}-{frame_end}"
    settings = properties.to_settings(scene, prefs, frames=frames)
    for _level, text, _fix in advice.warnings(scene, prefs):  # also for the render hook and blender -b -a
        log.warning("%s", text)
    folder = pass_export.pass_dir(scene)
    if not os.path.isfile(os.path.join(folder, contract.MANIFEST_NAME)):
        raise contract.ContractError(f"the pass folder {folder} has no {contract.MANIFEST_NAME}; render passes first")
    out_dir = pass_export.frames_dir(scene)
    st = state()
    discard()
    st.scene_name = scene.name
    live.reset()
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
        if job.get("out_dir"):
            status.out_dir = job["out_dir"]
    # monotonic progress, live preview, frames shown as written (live.py)
    live.on_snapshot(status, job, bpy.data.scenes.get(st.scene_name), st.worker, _client_or_raise)
    if state_ == contract.JOB_DONE:
        _finish(job)
    elif state_ == contract.JOB_FAILED:
        if status is not None:
            status.error_detail = str(job.get("error") or "")
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


def _client_or_raise() -> client.Client:
    return make_client()


def progress_text(job: dict) -> str:
    """'Neural render: Denoising, step 3/20, 0/8 frames decoded (16%), about 2 min left' (live.py's tracker)."""
    status = _status()
    text = status.progress_text if status is not None and status.progress_text else job.get("state", "")
    return f"Neural render: {text}"


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
    if live.random_weights(job):  # the strip says so too: whatever it shows is noise
        strip.name = live.RANDOM_WEIGHTS_STRIP
    movie = ""
    if scene.neurender.make_movie:
        try:
            movie = " and " + vse.write_movie(scene, out_dir, frames, os.path.join(out_dir, MOVIE_NAME))
        except (contract.ContractError, RuntimeError) as exc:
            set_message("", f"The movie could not be written: {exc}")
            return
    set_message(f"Done: {len(strip.elements)} frames on VSE channel {strip.channel} ({out_dir}){movie}"
                + live.result_note(job))


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


def free_vram() -> None:
    """Ask the backend to unload its models (Free VRAM); the answer arrives as a status message."""
    try:
        c = make_client()
    except client.BackendError as exc:
        set_message("", _artist_message(exc))
        return

    def done(_result, err) -> None:
        if err is not None:
            set_message("", _artist_message(err))
        else:
            set_message("The backend unloaded its models; the next render loads them again")

    set_message("Asking the backend to free its GPU memory...")
    state().worker.submit(c.free_models, done)


CONTROL_IMAGE = "Neural Render {kind}"


def _load_images(paths: dict) -> list:
    """Main thread: ``{kind: png path}`` as the images ``Neural Render <kind>`` (reloaded in place)."""
    images = []
    for kind, path in paths.items():
        name = CONTROL_IMAGE.format(kind=kind)
        image = bpy.data.images.get(name)
        if image is None:
            image = bpy.data.images.load(path, check_existing=False)
            image.name = name
        else:
            image.filepath = path
            image.reload()
        images.append(image)
    return images


def show_control_images(scene, frame: int, on_done) -> None:
    """Load the control images the backend derived for ``frame`` of the latest render into ``bpy.data.images``
    (``Neural Render depth`` ...) and call ``on_done(images, error)`` on the main thread. They are read from the
    output folder where the backend shares this disk, else fetched over HTTP on the worker (a remote backend)."""
    status = _status()
    out_dir = (status.out_dir if status is not None and status.out_dir else "") or pass_export.frames_dir(scene)
    folder = os.path.join(out_dir, *contract.CONTROLS_DIR.split("/"))
    local = {kind: os.path.join(folder, contract.CONTROL_FILE_PATTERN.format(kind=kind, frame=frame))
             for kind in contract.CONTROL_KINDS}
    local = {kind: path for kind, path in local.items() if os.path.isfile(path)}
    none = RuntimeError(f"No control images for frame {frame}: the backend derives them during a neural render "
                        "that uses ControlNets (render this frame first)")
    if local:
        on_done(_load_images(local), None)
        return
    job_id = status.job_id if status is not None else ""
    try:
        c = make_client() if job_id else None
    except client.BackendError:
        c = None
    if c is None:
        on_done([], none)
        return
    target = os.path.join(tempfile.gettempdir(), f"neurender-controls-{os.getpid()}")

    def work():
        got = {}
        for kind in contract.CONTROL_KINDS:
            try:
                data = c.control_png(job_id, kind, frame)
            except client.BackendError as exc:
                if exc.kind == "not_found":
                    continue
                raise
            os.makedirs(target, exist_ok=True)
            path = os.path.join(target, contract.CONTROL_FILE_PATTERN.format(kind=kind, frame=frame))
            with open(path, "wb") as f:
                f.write(data)
            got[kind] = path
        return got

    def done(got, err):
        if err is not None:
            on_done([], err)
        elif not got:
            on_done([], none)
        else:
            on_done(_load_images(got), None)

    state().worker.submit(work, done)


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

"""The add-on's one piece of runtime state: the worker, the watched jobs, the local backend.

Everything here runs on Blender's main thread except the functions handed to the worker, which only do
network calls. What must outlive a file load or a restart is in the .blend: the job records (``jobs.py``), which
``reattach_all`` follows again. ``discard()`` stops following (called on unregister and load_pre).
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from typing import Optional

import bpy

from . import (advice, backend_process, client, jobs, live, messages, pass_export, preferences, properties, remote,
               vse, worker)
from . import neurender_contract as contract

log = logging.getLogger(__name__)

TIMER_INTERVAL = 0.25
MOVIE_NAME = "neurender.mp4"


def _threaded() -> bool:
    """Worker threads also in background mode when NEURENDER_THREADED=1 (tests drive the queue with ``pump``, as
    the UI's timer does)."""
    return not bpy.app.background or os.environ.get("NEURENDER_THREADED") == "1"


class _State:
    def __init__(self) -> None:
        self.worker = worker.Worker(blocking=not _threaded())
        self.watchers: dict[str, worker.JobWatcher] = {}
        """One per job being followed (by backend job id): a second render never drops the first one's."""
        self.local = backend_process.LocalBackend()
        self.current = ""
        """Key of the job record the panel's status follows (the latest submitted)."""
        self.known: dict[str, dict] = {}
        """Record key -> {file, scene, record fields} of every job submitted in this session: an undo step (or a
        reload of a file saved before the job id arrived) that lost the record or its id gets them back."""
        self.session_keys: set[str] = set()
        self.reattach_pending = False
        """Set on register: the next ``pump`` runs ``reattach_all`` (bpy.data is restricted during register)."""
        self.last_job: dict = {}


_state: Optional[_State] = None


def state() -> _State:
    global _state
    if _state is None:
        _state = _State()
    return _state


def discard() -> None:
    """Stop following every job (the jobs go on; their records in the .blend reattach them). The local backend keeps
    running."""
    st = _state
    if st is not None:
        for watcher in st.watchers.values():
            watcher.stop()
        st.watchers.clear()
        st.current = ""


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
        reattach_all()  # jobs of the local backend wait for it to run again
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

def submit_job(scene, frame_start: int, frame_end: int, wait: Optional[bool] = None, key: str = "",
               settings=None) -> None:
    """Submit the pass folder of the job record ``key`` (``jobs.new``; its passes already written) for
    ``frame_start..frame_end``. Without ``key`` (scripts) a record is made for the scene's plain pass folder, with
    its own versioned output folder.

    Another job of the shot that is still running is left alone: it keeps its watcher and stays cancellable; the
    backend queues the new job behind it (each render has its own folders). Raises ``contract.ContractError`` for
    bad settings before anything is sent. In background mode (or with ``wait``) it blocks until the job is final.
    ``settings``: the ``contract.RenderSettings`` the pre-flight checked (sent as they are, not checked again);
    without them (scripts) they are built from the scene and checked here.
    """
    prefs = preferences.get()
    frames = f"{frame_start}-{frame_end}"
    if settings is None:
        settings = properties.to_settings(scene, prefs, frames=frames)
    for _level, text, _fix in advice.warnings(scene, prefs):  # also for the render hook and blender -b -a
        log.warning("%s", text)
    if not key:
        key = jobs.new(scene, frame_start, frame_end,
                       kind=jobs.KIND_ANIMATION, pass_dir=pass_export.pass_dir(scene))
    found = jobs.find(key=key)
    if found is None:
        raise contract.ContractError(f"no job record {key}")
    rec = found[1]
    folder, out_dir = rec.abs_pass_dir, rec.abs_out_dir
    if not os.path.isfile(os.path.join(folder, contract.MANIFEST_NAME)):
        record_failed(key, f"the pass folder {folder} has no {contract.MANIFEST_NAME}")
        raise contract.ContractError(f"the pass folder {folder} has no {contract.MANIFEST_NAME}; render passes first")
    st = state()
    st.session_keys.add(key)
    st.current = key
    rec.state = jobs.SUBMITTING
    live.reset()
    status = _status()
    if status is not None:
        status.job_id, status.job_state, status.error, status.out_dir = "", "submitting", "", out_dir
        status.frames_done, status.frames_total, status.step, status.steps_total, status.progress = 0, 0, 0, 0, 0.0
    blocking = st.worker.blocking if wait is None else wait

    try:
        c = make_client(prefs)
    except client.BackendError as exc:
        record_failed(key, str(exc))
        _job_update("", None, exc)
        return
    force = prefs.force_version
    upload = not prefs.shares_disk(c.base_url)
    rec.backend_url, rec.local_backend, rec.upload = c.base_url, bool(prefs.start_local), upload
    settings_dict = settings.to_dict()

    def work():
        c.check_version(force=force)
        if not upload:
            return c, c.submit(folder, settings_dict, out_dir)
        return c, _upload(c, folder, settings_dict, st.worker)

    def submitted(result, err):
        if err is not None:
            record_failed(key, _artist_message(err))
            if st.current == key:
                _job_update("", None, err)
            else:
                set_message("", _artist_message(err))
            return
        c, job = result
        job_id = str(job["id"])
        found = jobs.find(key=key)
        if found is not None:
            found[1].job_id = job_id
            # survives undo and a file reload before the record was saved with its id
            _remember(found[0], found[1])
        if upload:  # frames come back over HTTP into the scene's own output folder
            job = dict(job, out_dir=out_dir, server_out_dir=job.get("out_dir", ""), frames_downloaded=[])
        _job_update(job_id, job, None)
        _watch(job_id, c, upload, out_dir, blocking)

    set_message(f"Submitting frames {frames}" + (" (uploading the pass folder)..." if upload else "..."))
    if blocking and not st.worker.blocking:
        try:
            submitted(work(), None)
        except Exception as exc:  # noqa: BLE001 - reported like the async path
            submitted(None, exc)
    else:
        st.worker.submit(work, submitted)


def _watch(job_id: str, c: client.Client, upload: bool, out_dir: str, blocking: bool, once: bool = False) -> None:
    """Follow ``job_id`` (one watcher per job; other jobs' watchers are left alone)."""
    st = state()
    if upload:
        fetch = remote.FrameDownloader(c, job_id, out_dir).poll
    else:
        fetch = functools.partial(c.job, job_id)

    def on_update(snapshot, error) -> None:
        if st.watchers.get(job_id) is watcher:  # a snapshot queued before a file load (or discard) is dropped
            _job_update(job_id, snapshot, error)

    watcher = worker.JobWatcher(st.worker, fetch, on_update, keep_trying=True)
    old = st.watchers.pop(job_id, None)
    if old is not None:
        old.stop()
    st.watchers[job_id] = watcher
    if once:  # headless reattach: look once, never block the file load
        try:
            on_update(fetch(), None)
        except Exception as exc:  # noqa: BLE001 - reported on the record
            on_update(None, exc)
    elif blocking:
        watcher.wait()
    elif st.worker.blocking:  # background mode without waiting: no timers would drain a thread
        set_message(f"Submitted job {job_id}; not waiting for it (background mode)")
    else:
        watcher.start()


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

    zip_path = os.path.join(os.path.dirname(folder), f".neurender-upload-{os.getpid()}-{os.path.basename(folder)}.zip")
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


def _remember(scene, rec) -> None:
    """Keep the record's latest fields in the session (``state().known``), for an undo step that takes it away."""
    state().known[rec.key] = {"file": bpy.data.filepath, "scene": scene.name, "fields": jobs.to_dict(rec)}


def record_failed(key: str, message: str, state_: str = "") -> None:
    """The render of record ``key`` never reached the backend (pass render or submit failed, or ``state_``
    cancelled: Esc during the pass render)."""
    found = jobs.find(key=key)
    if found is not None and not found[1].job_id:
        found[1].state, found[1].message = state_ or jobs.ERROR, message


def _is_current(job_id: str) -> bool:
    st = state()
    if not job_id:
        return True
    found = jobs.find(job_id=job_id)
    if found is not None:
        return found[1].key == st.current
    status = _status()
    return status is not None and status.job_id == job_id


def _job_update(job_id: str, job, err) -> None:
    """A snapshot (or error) of ``job_id``: its record, and the panel's status when it is the current job."""
    status = _status()
    st = state()
    found = jobs.find(job_id=job_id) if job_id else None
    rec = found[1] if found is not None else None
    current = _is_current(job_id)
    if err is not None:
        text = _artist_message(err)
        if rec is not None:
            if getattr(err, "status", 0) == 404:  # the backend does not know the job (any more)
                rec.state = jobs.LOST
                text = f"The backend no longer knows job {job_id}; its finished frames stay in {rec.out_dir}"
            rec.message = text
        if current:
            if status is not None:
                status.job_state = contract.JOB_FAILED
            set_message("", text)
        return
    st.last_job = job
    state_ = job.get("state", "")
    p = job.get("progress") or {}
    if rec is not None:
        rec.state = state_
        rec.frames_done = len(job.get("frames_downloaded", job.get("frames_done")) or [])
        rec.frames_total = int(p.get("frames_total", 0)) or rec.frames_total
        rec.message = ""
        _remember(found[0], rec)
    if current and status is not None:
        status.job_id = str(job.get("id", ""))
        status.job_state = state_
        status.frames_done = int(p.get("frames_done", 0))
        status.frames_total = int(p.get("frames_total", 0))
        status.step = int(p.get("step", 0))
        status.steps_total = int(p.get("steps_total", 0))
        if rec is not None:
            status.out_dir = rec.abs_out_dir
        elif job.get("out_dir"):
            status.out_dir = job["out_dir"]
    if current:  # monotonic progress, live preview, frames of an animation shown as written (live.py)
        animation = found is not None and rec.kind == jobs.KIND_ANIMATION
        live.on_snapshot(status, job, found[0] if animation else None, st.worker,
                         lambda: _client_for(rec) if rec is not None else make_client(),
                         version=rec.version if rec is not None else None)
    if state_ == contract.JOB_DONE:
        if rec is not None and rec.imported:
            return
        _finish(job_id, job)
    elif state_ == contract.JOB_FAILED:
        if status is not None and current:
            status.error_detail = str(job.get("error") or "")
        text = client.job_failure_message(job)
        if rec is not None:
            rec.message = text
        set_message("", text)
    elif state_ == contract.JOB_CANCELLED:
        kept = job.get("frames_downloaded", job.get("frames_done")) or []
        where = rec.abs_out_dir if rec is not None else job.get("out_dir")
        set_message(f"Cancelled; {len(kept)} finished frames kept in {where}")
    elif current:
        set_message(progress_text(job))


def passes_cancelled(key: str = "") -> None:
    """The pass render of a hooked animation render was cancelled: nothing is submitted."""
    status = _status()
    if status is not None and not status.job_id:  # 'rendering passes' ends, so the modal watcher stops too
        status.job_state = contract.JOB_CANCELLED
    if key:
        found = jobs.find(key=key)
        if found is not None:
            found[1].state, found[1].message = contract.JOB_CANCELLED, "the pass render was cancelled"
    set_message("Render cancelled; nothing was sent to the neural renderer")


def _client_or_raise() -> client.Client:
    return make_client()


def progress_text(job: dict) -> str:
    """'Neural render: Denoising, step 3/20, 0/8 frames decoded (16%), about 2 min left' (live.py's tracker)."""
    status = _status()
    text = status.progress_text if status is not None and status.progress_text else job.get("state", "")
    return f"Neural render: {text}"


def _finish(job_id: str, job: dict) -> None:
    found = jobs.find(job_id=job_id)
    out_dir = job.get("out_dir") or ""
    if found is None:
        set_message(f"Done; frames in {out_dir} (the scene is gone, nothing imported)")
        return
    scene, rec = found
    requested = (job.get("settings") or {}).get("frames") or ""
    first, last = contract.parse_frame_range(requested) if requested else (rec.frame_start, rec.frame_end)
    try:
        text = import_record(scene, rec, first, last, random_weights=live.random_weights(job))
    except (contract.ContractError, RuntimeError) as exc:
        rec.message = f"The neural frames could not be imported: {exc}"
        set_message("", rec.message)
        return
    set_message(text + live.result_note(job))


def import_record(scene, rec, first: Optional[int] = None, last: Optional[int] = None,
                  random_weights: bool = False) -> str:
    """Bring the record's finished frames into Blender: an animation as its VSE strip (replacing the strips of older
    versions), a single frame as an image (never a strip). Returns the sentence for the artist."""
    out_dir = rec.abs_out_dir
    first = rec.frame_start if first is None else first
    last = rec.frame_end if last is None else last
    frames = [f for f in vse.result_frames(out_dir) if first <= f <= last]
    if not frames:
        raise contract.ContractError(f"no neural frames of {first}-{last} in {out_dir}")
    version = pass_export.version_name(rec.version)
    if random_weights:
        rec.random_weights = True  # kept: a later Import from the Jobs panel says so too
    noise = rec.random_weights
    if rec.kind == jobs.KIND_FRAME:
        path = os.path.join(out_dir, contract.FRAME_FILE_PATTERN.format(frame=frames[0]))
        name = f"neurender frame {frames[0]} {version}" + (" RANDOM WEIGHTS (noise)" if noise else "")
        img = vse.load_frame_image(path, name)
        rec.image, rec.imported = img.name, True
        _remember(scene, rec)
        return f"Done: frame {frames[0]} ({version}) is the image {img.name!r} ({out_dir})"
    strip = vse.place_result(scene, out_dir, frames, version=rec.version)
    if noise:  # the strip says so too: whatever it shows is noise
        strip.name = live.RANDOM_WEIGHTS_STRIP  # (its version stays in the record and the strip's tag)
    rec.strip, rec.imported = strip.name, True
    _remember(scene, rec)
    names = {s.name for s in vse.our_strips(scene)}
    for other in jobs.records(scene):
        if other.strip and other.strip not in names:
            other.strip = ""  # replaced by this version's strip
    movie = ""
    if scene.neurender.make_movie:
        movie = " and " + vse.write_movie(scene, out_dir, frames, os.path.join(out_dir, MOVIE_NAME))
    muted = (". The strip is muted so that your own renders stay as they were (your Output uses the Sequencer); "
             "unmute it to watch it") if strip.mute else ""
    return f"Done: {len(strip.elements)} frames on VSE channel {strip.channel} ({out_dir}){movie}{muted}"


def cancel_job(job_id: str = "") -> bool:
    """Ask the backend to stop ``job_id`` (default: the panel's current job) at its next step; False when it is not
    running."""
    status = _status()
    if not job_id:
        job_id = status.job_id if status is not None else ""
        if not job_id or (status.job_state in contract.JOB_FINAL_STATES):
            return False
    found = jobs.find(job_id=job_id)
    if found is not None and not found[1].active:
        return False
    try:
        c = _client_for(found[1]) if found is not None else make_client()
    except client.BackendError as exc:
        _job_update(job_id, None, exc)
        return False

    def work():
        return c.cancel(job_id)

    set_message("Cancelling...")
    state().worker.submit(work, lambda job, err: _job_update(job_id, job, err))
    return True


def _client_for(rec) -> client.Client:
    """A client for the backend the record's job went to (the local backend: once it runs again)."""
    prefs = preferences.get()
    if rec.local_backend:
        st = state()
        if not st.local.running:
            raise client.BackendError("The local backend is not running; press Connect to start it.",
                                      client.UNREACHABLE)
        return client.Client(st.local.url, prefs.token)
    return client.Client(rec.backend_url or prefs.backend_url, prefs.token)


def reattach_all() -> int:
    """Follow again every record of the open file whose job may still run, and import finished ones not imported
    yet (after a file load, a restart, re-enabling the extension, Connect). Returns how many are followed."""
    st = state()
    followed = 0
    for key, known in st.known.items():  # an undo step took a record of this file away: it comes back
        scene = bpy.data.scenes.get(known["scene"])
        if known["file"] == bpy.data.filepath and scene is not None and jobs.find(key=key) is None:
            log.info("job record %s restored (%s)", known["fields"]["job_id"], known["scene"])
            jobs.restore(scene, known["fields"])
    for scene, rec in jobs.all_records():
        if not rec.job_id and rec.key in st.known:
            rec.job_id = st.known[rec.key]["fields"]["job_id"]  # an undo or reload lost the id that came later
        if rec.job_id:
            _remember(scene, rec)  # (also the records of a file just loaded or an extension just re-enabled)
        if not rec.job_id:
            if rec.active and rec.key not in st.session_keys:
                rec.state, rec.message = jobs.ERROR, "Blender closed before this render reached the backend"
            continue
        wanted = rec.active or (rec.state == contract.JOB_DONE and not rec.imported)
        if not wanted or (rec.job_id in st.watchers and st.watchers[rec.job_id].alive):
            continue
        try:
            c = _client_for(rec)
        except client.BackendError as exc:
            rec.message = str(exc)
            continue
        log.info("reattaching to job %s (%s)", rec.job_id, rec.label)
        _watch(rec.job_id, c, rec.upload, rec.abs_out_dir, blocking=False, once=st.worker.blocking)
        followed += 1
    return followed


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
        if st.reattach_pending:
            st.reattach_pending = False
            reattach_all()
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

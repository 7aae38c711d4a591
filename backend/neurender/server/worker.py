"""The single GPU worker: one thread draining the job queue held in the database.

It calls the injected job runner (``neurender.runner.run_render`` in production) with the shared pipeline cache,
so models stay loaded between jobs. Cancellation goes through the runner's ``CancelToken``; a server shutdown
interrupts the running job the same way but puts it back in the queue instead of cancelling it.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from neurender.contract import (
    CONTROLS_DIR,
    FRAME_FILE_PATTERN,
    JOB_CANCELLED,
    JOB_DONE,
    JOB_FAILED,
    JOB_QUEUED,
    ContractError,
    ErrorKind,
    Progress,
    RenderSettings,
    error_kind_of,
    frame_number,
)
from neurender.errors import JobCancelled
from neurender.runner import CancelToken, JobSpec
from neurender.server.store import JobRecord, JobStore

log = logging.getLogger(__name__)

Runner = Callable[..., Any]

def scan_frames_done(out_dir: Path, frame_start: int, frame_end: int) -> list[int]:
    """Frame numbers with a finished file in ``out_dir`` (temp files never match the final name)."""
    try:
        names = [e.name for e in Path(out_dir).iterdir() if e.is_file()]
    except OSError:  # missing, not a folder, unreadable: nothing finished that the server can see
        return []
    done = []
    for name in names:
        frame = frame_number(name)
        if frame is not None and frame_start <= frame <= frame_end and name == FRAME_FILE_PATTERN.format(frame=frame):
            done.append(frame)
    return sorted(done)


class Worker:
    def __init__(
        self,
        store: JobStore,
        runner: Runner,
        pipelines: Optional[Any] = None,
        *,
        progress_interval: float = 0.1,
    ) -> None:
        self.store = store
        self.runner = runner
        self.pipelines = pipelines
        self.progress_interval = progress_interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._current: Optional[tuple[str, CancelToken]] = None
        self._free_pending = False
        self._thread: Optional[threading.Thread] = None

    # ---- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.store.recover()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="neurender-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after interrupting the running job; it stays queued and resumes on the next start."""
        self._stop.set()
        with self._lock:
            if self._current is not None:
                self._current[1].cancel()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the worker did not stop within %.0f s", timeout)

    def notify(self) -> None:
        """A job was queued."""
        self._wake.set()

    # ---- requests from the HTTP layer ---------------------------------------------------------------------------

    @property
    def busy_job(self) -> Optional[str]:
        with self._lock:
            return self._current[0] if self._current else None

    def cancel(self, job_id: str) -> Optional[JobRecord]:
        record = self.store.request_cancel(job_id)
        with self._lock:
            if self._current is not None and self._current[0] == job_id:
                self._current[1].cancel()
        return record

    def free_models(self) -> bool:
        """Release the pipelines now if idle (True), else right after the running job (False)."""
        if self.pipelines is None:
            return True
        with self._lock:
            if self._current is not None:
                self._free_pending = True
                return False
            self.pipelines.free()
            self._free_pending = False
            return True

    # ---- the loop ----------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                record = self.store.claim_next()
            except Exception:  # a broken database must not kill the thread silently in a loop
                log.exception("cannot read the job queue")
                self._stop.wait(1.0)
                continue
            if record is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            token = CancelToken()
            with self._lock:
                self._current = (record.id, token)
            try:
                self._run(record, token)
            except Exception as exc:  # recording the result failed (e.g. a full disk): the thread must go on
                log.exception("job %s: cannot record its result", record.id)
                self._fail_unrecorded(record, exc)
            finally:
                with self._lock:
                    self._current = None
                    if self._free_pending and self.pipelines is not None:
                        self._free_pending = False
                        try:
                            self.pipelines.free()
                        except Exception:
                            log.exception("freeing the models failed")

    def _fail_unrecorded(self, record: JobRecord, exc: Exception) -> None:
        """A job whose outcome could not be written: mark it failed (once more), so it never stays 'running'."""
        try:
            self.store.finish(record.id, JOB_FAILED, error=f"internal error: {exc.__class__.__name__}: {exc}",
                              error_kind=ErrorKind.INTERNAL.value)
        except Exception:
            log.exception("job %s: cannot record its failure either; it is re-queued at the next start", record.id)
            self._stop.wait(1.0)

    def _run(self, record: JobRecord, token: CancelToken) -> None:
        fresh = self.store.get(record.id)
        if fresh is not None and fresh.cancel_requested:
            token.cancel()
        out_dir = Path(record.out_dir)
        last_write = 0.0
        last_frames = -1

        def on_progress(p: Progress) -> None:
            nonlocal last_write, last_frames
            now = time.monotonic()
            try:
                if p.frames_done != last_frames:
                    last_frames = p.frames_done
                    last_write = now
                    done = scan_frames_done(out_dir, record.frame_start, record.frame_end)
                    self.store.update_progress(record.id, p, done)
                elif now - last_write >= self.progress_interval:
                    last_write = now
                    self.store.update_progress(record.id, p)
            except Exception:  # a missed progress record must never fail the render itself
                log.exception("job %s: cannot record progress", record.id)

        def frames_done() -> list[int]:
            return scan_frames_done(out_dir, record.frame_start, record.frame_end)

        log.info("job %s: started (%s -> %s)", record.id, record.pass_dir, record.out_dir)
        try:
            # checked once at submit (Service.settings_from); the record is the server's own
            settings = RenderSettings.from_dict(record.settings, check=False)
            # the control images go along (small PNGs), so the add-on can show what the ControlNets saw
            spec = JobSpec(pass_dir=Path(record.pass_dir), out_dir=out_dir, settings=settings,
                           save_controls=out_dir / CONTROLS_DIR, settings_checked=True)
            self.runner(spec, progress=on_progress, cancel=token, pipelines=self.pipelines)
        except JobCancelled:
            if self._stop.is_set() and not self.store.get(record.id).cancel_requested:  # type: ignore[union-attr]
                log.info("job %s: interrupted by shutdown; it stays queued", record.id)
                self.store.finish(record.id, JOB_QUEUED, frames_done=frames_done(), phase="interrupted")
            else:
                log.info("job %s: cancelled", record.id)
                self.store.finish(
                    record.id, JOB_CANCELLED, error_kind=ErrorKind.CANCELLED.value, frames_done=frames_done()
                )
        except Exception as exc:  # the one translation of a job's failure into its record
            kind = error_kind_of(exc)
            if isinstance(exc, ContractError):  # InputError and contract violations: the request's fault
                log.info("job %s: failed on input (%s): %s", record.id, kind.value, exc)
                error = str(exc)
            elif kind is ErrorKind.OUT_OF_MEMORY:
                log.exception("job %s: out of memory", record.id)
                error = f"the device ran out of memory ({exc.__class__.__name__}: {exc})"
            else:
                log.exception("job %s: internal error", record.id)
                error = f"internal error: {exc.__class__.__name__}: {exc}"
            self.store.finish(record.id, JOB_FAILED, error=error, error_kind=kind.value, frames_done=frames_done())
        else:
            log.info("job %s: done", record.id)
            self.store.finish(record.id, JOB_DONE, frames_done=frames_done())

"""Retention of finished jobs: what the server keeps on its own disk, and for how long.

A job's server-owned files live in ``DATA_DIR/jobs/<id>/`` (the unpacked upload in ``passes/``, the frames of a job
submitted without ``out_dir`` in ``frames/``). They go when the job is purged: on request
(``DELETE /jobs/{id}?purge=1``) or when a final job is older than ``--keep-days``. An output folder the client
chose (``out_dir``) is the artist's and is never touched; purging such a job removes only its record.
Folders in ``DATA_DIR/jobs`` without a record (an upload interrupted by a crash) are removed once they are older than
the retention period too.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Optional

from neurender.server.store import JobRecord, JobStore

log = logging.getLogger(__name__)

SWEEP_SECONDS = 3600.0
ORPHAN_MIN_AGE = 3600.0
"""An unrecorded job folder younger than this may be an upload being unpacked right now; never removed."""


def job_dir(jobs_dir: Path, job_id: str) -> Optional[Path]:
    """``jobs_dir/<id>`` for a plain job id (never a path that could leave ``jobs_dir``)."""
    if not job_id or not job_id.isalnum() or not job_id.isascii():
        return None
    return Path(jobs_dir) / job_id


def remove_job_files(jobs_dir: Path, record: JobRecord) -> None:
    """Remove the server-owned files of ``record`` (the upload and default frames); never a client's out_dir."""
    folder = job_dir(jobs_dir, record.id)
    if folder is not None and folder.exists():
        shutil.rmtree(folder, ignore_errors=True)


def purge(store: JobStore, jobs_dir: Path, record: JobRecord) -> bool:
    """Delete a final job's record and its server-owned files. False if the job is not final (or already gone)."""
    if not store.delete(record.id):
        return False
    remove_job_files(jobs_dir, record)
    log.info("job %s: purged", record.id)
    return True


def sweep(store: JobStore, jobs_dir: Path, keep_days: float, now: Optional[float] = None) -> list[str]:
    """Purge final jobs older than ``keep_days`` and orphaned job folders; return the purged job ids."""
    if keep_days <= 0:
        return []
    now = time.time() if now is None else now
    cutoff = now - keep_days * 86400.0
    purged = [r.id for r in store.final_before(cutoff) if purge(store, jobs_dir, r)]
    known = store.ids()
    try:
        entries = list(Path(jobs_dir).iterdir())
    except FileNotFoundError:
        entries = []
    for entry in entries:
        if entry.name in known or not entry.is_dir() or entry.is_symlink():
            continue
        try:
            age = now - entry.stat().st_mtime
        except OSError:
            continue
        if age > max(keep_days * 86400.0, ORPHAN_MIN_AGE):
            shutil.rmtree(entry, ignore_errors=True)
            log.info("removed the orphaned job folder %s", entry)
    if purged:
        log.info("retention: purged %d job(s) older than %g days", len(purged), keep_days)
    return purged


class Janitor:
    """Runs :func:`sweep` at start-up and then every ``interval`` seconds in a daemon thread."""

    def __init__(self, store: JobStore, jobs_dir: Path, keep_days: float, interval: float = SWEEP_SECONDS) -> None:
        self.store = store
        self.jobs_dir = Path(jobs_dir)
        self.keep_days = keep_days
        self.interval = interval
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        if self.keep_days <= 0:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="neurender-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                sweep(self.store, self.jobs_dir, self.keep_days)
            except Exception:  # retention must never take the service down
                log.exception("retention sweep failed")
            self._stop.wait(self.interval)

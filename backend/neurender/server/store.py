"""Durable job state in SQLite (stdlib ``sqlite3``, WAL journal, full sync).

The database is the queue: the worker claims the oldest queued job. Jobs, their settings and progress survive a
restart; :meth:`JobStore.recover` puts jobs that were running when the process died back in the queue (the
runner skips frames already on disk and resumes from its checkpoint).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from neurender.contract import (
    JOB_CANCELLED,
    JOB_FIELDS,
    JOB_DONE,
    JOB_FAILED,
    JOB_FINAL_STATES,
    JOB_QUEUED,
    JOB_RUNNING,
    ContractError,
    ErrorKind,
    Progress,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
"""2: ``error_kind`` column (an ``ErrorKind`` value); a version-1 database is upgraded in place on open."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    settings TEXT NOT NULL,
    progress TEXT NOT NULL,
    error TEXT,
    error_kind TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    pass_dir TEXT NOT NULL,
    out_dir TEXT NOT NULL,
    frame_start INTEGER NOT NULL,
    frame_end INTEGER NOT NULL,
    frames_done TEXT NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    uploaded INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
"""


@dataclass
class JobRecord:
    id: str
    state: str
    settings: dict[str, Any]
    progress: dict[str, Any]
    error: Optional[str]
    created: float
    updated: float
    pass_dir: str
    out_dir: str
    frame_start: int
    frame_end: int
    frames_done: list[int] = field(default_factory=list)
    cancel_requested: bool = False
    uploaded: bool = False
    error_kind: Optional[str] = None

    def to_api(self) -> dict[str, Any]:
        """The ``Job`` JSON object of the HTTP API (see ``neurender.contract``)."""
        return {name: getattr(self, name) for name in JOB_FIELDS}


def _valid_text(value: Any) -> Any:
    """``value`` with every string made encodable as UTF-8 (a lone surrogate becomes U+FFFD).

    The contract refuses such text before anything is stored; this keeps a row written by an older server (or by
    hand) from making every listing of the jobs fail."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_valid_text(v) for v in value]
    if isinstance(value, dict):
        return {_valid_text(k): _valid_text(v) for k, v in value.items()}
    return value


def _record(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=_valid_text(row["id"]),
        state=row["state"],
        settings=_valid_text(json.loads(row["settings"])),
        progress=_valid_text(json.loads(row["progress"])),
        error=_valid_text(row["error"]),
        created=row["created"],
        updated=row["updated"],
        pass_dir=_valid_text(row["pass_dir"]),
        out_dir=_valid_text(row["out_dir"]),
        frame_start=row["frame_start"],
        frame_end=row["frame_end"],
        frames_done=json.loads(row["frames_done"]),
        cancel_requested=bool(row["cancel_requested"]),
        uploaded=bool(row["uploaded"]),
        error_kind=row["error_kind"],
    )


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobStore:
    """Thread-safe access to the jobs table: one connection, one lock, short transactions."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, 1, SCHEMA_VERSION):
            raise sqlite3.DatabaseError(
                f"job database {self.path} has schema version {version}; expected {SCHEMA_VERSION}"
            )
        self._db.executescript(_SCHEMA)
        if version == 1:  # upgrade in place: jobs of the old server keep their state, with no error kind
            self._db.execute("ALTER TABLE jobs ADD COLUMN error_kind TEXT")
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- writes ----------------------------------------------------------------------------------------------

    def add(
        self,
        *,
        job_id: str,
        settings: dict[str, Any],
        pass_dir: str,
        out_dir: str,
        frame_start: int,
        frame_end: int,
        frames_total: int,
        frames_done: list[int],
        uploaded: bool = False,
    ) -> JobRecord:
        now = time.time()
        progress = Progress(frames_done=len(frames_done), frames_total=frames_total, phase="queued")
        draft = JobRecord(
            id=job_id, state=JOB_QUEUED, settings=settings, progress=progress.to_dict(), error=None, created=now,
            updated=now, pass_dir=pass_dir, out_dir=out_dir, frame_start=frame_start, frame_end=frame_end,
            frames_done=sorted(frames_done), uploaded=uploaded,
        )
        try:  # nothing is stored that could not be answered: the record must serialise as the API's UTF-8 JSON
            json.dumps(draft.to_api(), ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
            raise ContractError(f"the job cannot be stored: {exc.__class__.__name__}") from None
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (id, state, settings, progress, error, created, updated, pass_dir, out_dir, "
                "frame_start, frame_end, frames_done, uploaded) VALUES (?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    JOB_QUEUED,
                    json.dumps(settings, sort_keys=True),
                    json.dumps(progress.to_dict()),
                    now,
                    now,
                    pass_dir,
                    out_dir,
                    frame_start,
                    frame_end,
                    json.dumps(sorted(frames_done)),
                    int(uploaded),
                ),
            )
        record = self.get(job_id)
        assert record is not None
        return record

    def recover(self) -> list[str]:
        """At start-up: jobs left running by a dead process go back to the queue (or to cancelled, if asked)."""
        now = time.time()
        with self._lock:
            rows = self._db.execute(
                "SELECT id, cancel_requested, progress, frames_done FROM jobs WHERE state = ?", (JOB_RUNNING,)
            ).fetchall()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for row in rows:
                    cancelled = bool(row["cancel_requested"])
                    state = JOB_CANCELLED if cancelled else JOB_QUEUED
                    # the dead process's step and message are stale: keep only what is on disk (frames done)
                    old = json.loads(row["progress"])
                    progress = Progress(
                        frames_done=len(json.loads(row["frames_done"])),
                        frames_total=int(old.get("frames_total", 0)),
                        phase="recovered" if state == JOB_QUEUED else state,
                        message="re-queued after a restart" if state == JOB_QUEUED else "",
                    )
                    self._db.execute(
                        "UPDATE jobs SET state = ?, error_kind = ?, progress = ?, updated = ? WHERE id = ?",
                        (
                            state,
                            ErrorKind.CANCELLED.value if cancelled else None,
                            json.dumps(progress.to_dict()),
                            now,
                            row["id"],
                        ),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        requeued = [row["id"] for row in rows if not row["cancel_requested"]]
        if requeued:
            log.info("re-queued %d job(s) left running by the previous process: %s", len(requeued), requeued)
        return requeued

    def claim_next(self) -> Optional[JobRecord]:
        """Atomically move the oldest queued job to running and return it."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT id FROM jobs WHERE state = ? ORDER BY seq LIMIT 1", (JOB_QUEUED,)
                ).fetchone()
                if row is not None:
                    self._db.execute(
                        "UPDATE jobs SET state = ?, updated = ? WHERE id = ?", (JOB_RUNNING, time.time(), row["id"])
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return self.get(row["id"]) if row is not None else None

    def update_progress(self, job_id: str, progress: Progress, frames_done: Optional[list[int]] = None) -> None:
        with self._lock:
            if frames_done is None:
                self._db.execute(
                    "UPDATE jobs SET progress = ?, updated = ? WHERE id = ?",
                    (json.dumps(progress.to_dict()), time.time(), job_id),
                )
            else:
                self._db.execute(
                    "UPDATE jobs SET progress = ?, frames_done = ?, updated = ? WHERE id = ?",
                    (json.dumps(progress.to_dict()), json.dumps(sorted(frames_done)), time.time(), job_id),
                )

    def finish(
        self,
        job_id: str,
        state: str,
        *,
        error: Optional[str] = None,
        error_kind: Optional[str] = None,
        frames_done: Optional[list[int]] = None,
        phase: Optional[str] = None,
    ) -> None:
        """Move a job to ``state`` (final, or back to queued when the server stops mid-job); a failed or cancelled
        job records its ``error_kind`` (an ``ErrorKind`` value)."""
        with self._lock:
            row = self._db.execute("SELECT progress, frames_done FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return
            progress = json.loads(row["progress"])
            done = sorted(frames_done) if frames_done is not None else json.loads(row["frames_done"])
            progress["frames_done"] = len(done)
            progress["phase"] = phase if phase is not None else state
            self._db.execute(
                "UPDATE jobs SET state = ?, error = ?, error_kind = ?, progress = ?, frames_done = ?, updated = ? "
                "WHERE id = ?",
                (state, error, error_kind, json.dumps(progress), json.dumps(done), time.time(), job_id),
            )

    def request_cancel(self, job_id: str) -> Optional[JobRecord]:
        """Cancel a queued job at once; mark a running one so the worker stops it at its next step."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "UPDATE jobs SET state = ?, error_kind = ?, updated = ?, cancel_requested = 1 "
                    "WHERE id = ? AND state = ?",
                    (JOB_CANCELLED, ErrorKind.CANCELLED.value, now, job_id, JOB_QUEUED),
                )
                self._db.execute(
                    "UPDATE jobs SET cancel_requested = 1, updated = ? WHERE id = ? AND state = ?",
                    (now, job_id, JOB_RUNNING),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return self.get(job_id)

    def delete(self, job_id: str) -> bool:
        """Remove a final job's record (its files are the caller's business); False if absent or still active."""
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM jobs WHERE id = ? AND state IN (?, ?, ?)", (job_id, JOB_DONE, JOB_FAILED, JOB_CANCELLED)
            )
        return cursor.rowcount > 0

    # ---- reads -----------------------------------------------------------------------------------------------

    def final_before(self, cutoff: float) -> list[JobRecord]:
        """Final jobs last updated before ``cutoff`` (unix seconds), oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE updated < ? AND state IN (?, ?, ?) ORDER BY seq",
                (cutoff, JOB_DONE, JOB_FAILED, JOB_CANCELLED),
            ).fetchall()
        return [_record(r) for r in rows]

    def ids(self) -> set[str]:
        with self._lock:
            return {row["id"] for row in self._db.execute("SELECT id FROM jobs").fetchall()}

    def get(self, job_id: str) -> Optional[JobRecord]:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _record(row) if row is not None else None

    def list(self, limit: int = 1000) -> list[JobRecord]:
        """Newest first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [_record(r) for r in rows]

    def count_active(self) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE state IN (?, ?)", (JOB_QUEUED, JOB_RUNNING)
            ).fetchone()
        return int(row[0])

    def active_job_writing_to(self, out_dir: str) -> Optional[str]:
        """The id of a queued or running job whose output folder is ``out_dir``, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT id FROM jobs WHERE out_dir = ? AND state IN (?, ?) LIMIT 1", (out_dir, JOB_QUEUED, JOB_RUNNING)
            ).fetchone()
        return row["id"] if row is not None else None

    def is_final(self, job_id: str) -> bool:
        record = self.get(job_id)
        return record is None or record.state in JOB_FINAL_STATES

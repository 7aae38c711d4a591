"""State shared by the routes of ``neurender serve``: configuration, job store, worker; job submission rules."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Optional

from fastapi import Request

from neurender.contract import ContractError, ErrorKind, PassManifest, RenderSettings, render_size
from neurender.errors import PassFolderError, ServiceRefusal
from neurender.server.config import ServerConfig
from neurender.server.paths import PathRefused, confine, confine_file
from neurender.server.store import JobRecord, JobStore
from neurender.server.worker import Runner, Worker, scan_frames_done

log = logging.getLogger(__name__)

MAX_ID_CHARS = 64


def detect_device() -> str:
    """The best torch device of this machine (imports torch; call once at start-up, never at import)."""
    try:
        import torch

        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
    except Exception:  # torch missing or broken: the runner will say so per job
        log.warning("torch is not usable; reporting device 'cpu'")
    return "cpu"


def _check_out_dir(out_dir: Path) -> None:
    """The output folder is created by the job, not at submit (a refused or failed job leaves nothing behind); here
    only: it is a folder if it exists, and its nearest existing parent is a folder this process may write into."""
    if out_dir.exists() and not out_dir.is_dir():
        raise PathRefused(f"out_dir {out_dir} exists and is not a folder")
    existing = out_dir
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise PathRefused(f"out_dir {out_dir} cannot be created: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PathRefused(f"out_dir {out_dir} cannot be written: {existing} is not writable for the server")


class Service:
    """State shared by the routes: configuration, store, worker. Created once per app (``app.state.service``)."""

    def __init__(self, config: ServerConfig, runner: Runner, pipelines: Any, token: Optional[str]) -> None:
        self.config = config
        self.token = token
        self.pipelines = pipelines
        self.store = JobStore(config.db_path)
        self.worker = Worker(self.store, runner, pipelines, progress_interval=config.progress_interval)
        self.device = detect_device() if config.device == "auto" else config.device
        self._submit_lock = threading.Lock()

    def settings_from(self, data: Any) -> RenderSettings:
        settings = RenderSettings.from_dict(data)
        model_roots = list(self.config.roots) + list(self.config.model_roots)
        paths = [("model", settings.model), ("reference_image", settings.reference_image)]
        paths += [(f"controlnet {u.kind} model", u.model) for u in settings.controlnets]
        paths += [("LoRA path", lora.path) for lora in settings.loras]
        paths += [("embedding", path) for path in settings.embeddings]
        paths += [("motion module", settings.motion_module)]
        for what, value in paths:
            if value:
                confine(value, model_roots, what)
        return settings

    def submit(self, job_id: str, pass_dir: Path, out_dir: Path, settings: RenderSettings, uploaded: bool) -> JobRecord:
        # the contract's rules, as the runner applies them: a job that can only fail is refused here
        manifest = PassManifest.read(pass_dir)
        render_size(settings, manifest.width, manifest.height)
        frames = manifest.select_frames(settings.frames)
        self.check_pass_files(pass_dir, manifest, frames)
        _check_out_dir(out_dir)
        with self._submit_lock:  # the checks and the insert are one step for concurrent clients
            if self.store.count_active() >= self.config.max_queued_jobs:
                raise ServiceRefusal(
                    f"the queue is full ({self.config.max_queued_jobs} jobs); retry later", kind=ErrorKind.QUEUE_FULL
                )
            other = self.store.active_job_writing_to(str(out_dir))
            if other is not None:
                raise ServiceRefusal(
                    f"out_dir {out_dir} is in use by job {other}; cancel it or choose another", kind=ErrorKind.BUSY
                )
            record = self._add(job_id, pass_dir, out_dir, settings, frames, uploaded)
        log.info("job %s: queued (%d frames from %s)", job_id, len(frames), pass_dir)
        self.worker.notify()
        return record

    def check_pass_files(self, pass_dir: Path, manifest: PassManifest, frames: list[int]) -> None:
        """What can be checked at submit without reading pixels: no frame file is (or links to) a file outside the
        roots, every selected frame file exists and its header has the manifest's size and passes. The pixel-level
        pre-pass runs in the job, before any model loads (``PassFolder.foreground_ranges``)."""
        from neurender.passes.folder import PassFolder

        entries = {e.frame: e for e in manifest.frames}
        for f in frames:
            confine_file(pass_dir / entries[f].file, self.config.roots, f"frame {f}'s file {entries[f].file!r}")
        try:
            PassFolder.open(pass_dir, frames=(frames[0], frames[-1]))
        except ContractError:
            raise
        except (OSError, ValueError) as exc:  # a file-system error on the request's own folder
            raise PassFolderError(f"the pass folder {pass_dir} cannot be read: {exc}") from None

    def _add(
        self, job_id: str, pass_dir: Path, out_dir: Path, settings: RenderSettings, frames: list[int], uploaded: bool
    ) -> JobRecord:
        wanted = set(frames)
        return self.store.add(
            job_id=job_id,
            settings=settings.to_dict(),
            pass_dir=str(pass_dir),
            out_dir=str(out_dir),
            frame_start=frames[0],
            frame_end=frames[-1],
            frames_total=len(frames),
            frames_done=[f for f in scan_frames_done(out_dir, frames[0], frames[-1]) if f in wanted],
            uploaded=uploaded,
        )

    def job_or_404(self, job_id: str) -> JobRecord:
        record = self.store.get(job_id) if len(job_id) <= MAX_ID_CHARS else None
        if record is None:
            raise ServiceRefusal(f"job {job_id[:MAX_ID_CHARS]!r} does not exist", kind=ErrorKind.NOT_FOUND)
        return record


def service_of(request: Request) -> Service:
    """The app's ``Service`` (a FastAPI dependency of every route)."""
    return request.app.state.service

"""Distributed rendering on a Ray cluster: shots -> anchors task + chunk tasks, one GPU each, retried on failure.

Ray (https://docs.ray.io, "Fault tolerance: tasks") re-executes a task whose worker process or node died, up to
``max_retries`` times; a re-executed chunk resumes from its own checkpoint (``OUT/.chunks/<A-B>/.neurender``), and
finished frames are skipped, so a retry costs at most the step that was lost. Errors raised by our code are not
retried (bad input stays bad). All nodes must see the pass folders and output folders at the same paths (the usual
render-farm shared storage). Each shot's chunk tasks depend on its anchors task (Ray passes the anchors task's
result as an argument, so chunks start only when the anchors exist); each chunk merges what it can when it ends,
and the driver runs a final merge per shot when all its chunks are done.

Ray is an optional dependency (``pip install "neurender[farm]"``); it is imported only when a farm runs.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

from neurender.contract import RenderSettings
from neurender.errors import InputError

log = logging.getLogger(__name__)

ANCHORS_SUBDIR = "anchors"

_PIPELINES = None
"""Per worker process: the models stay loaded between the chunks a Ray worker runs (``discard_pipelines`` frees them)."""


def _pipelines():
    global _PIPELINES
    if _PIPELINES is None:
        from neurender.models.cache import PipelineCache

        _PIPELINES = PipelineCache()
    return _PIPELINES


def discard_pipelines() -> None:
    global _PIPELINES
    _PIPELINES = None


@dataclass
class Shot:
    pass_dir: Path
    out_dir: Path
    settings: RenderSettings
    """``settings.frames`` limits the shot to a range; empty = every frame."""
    anchors: Optional[Path] = None
    """Precomputed anchors to share (e.g. a look's); with None and ``compute_anchors`` they are computed."""
    compute_anchors: bool = True
    anchor_count: int = 3


@dataclass
class FarmOptions:
    address: str
    chunk_size: int = 24
    overlap: int = 4
    gpus_per_task: float = 1.0
    cpus_per_task: float = 1.0
    max_retries: int = 3


@dataclass
class FarmReport:
    chunks_done: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    frames_written: dict[str, list[int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures


# -- Ray tasks (module-level functions: workers import them by name) -------------------------------------------


def anchors_task(pass_dir: str, out_dir: str, settings: dict, count: int) -> str:
    from neurender.farm.anchors import compute_anchors

    compute_anchors(pass_dir, out_dir, RenderSettings.from_dict(settings), count=count, pipelines=_pipelines())
    return out_dir


def chunk_task(
    pass_dir: str, out_dir: str, settings: dict, core: list[int], overlap: int, anchors: Optional[str]
) -> dict:
    from neurender.farm.chunks import render_chunk

    chunk_settings = RenderSettings.from_dict({**settings, "frames": f"{core[0]}-{core[1]}"})
    result = render_chunk(pass_dir, out_dir, chunk_settings, overlap=overlap, anchors=anchors, pipelines=_pipelines())
    return {**result.to_dict(), "node": socket.gethostname(), "pid": os.getpid()}


# -- driver ---------------------------------------------------------------------------------------------------


def _import_ray():
    try:
        import ray
    except ModuleNotFoundError:
        raise InputError('neurender farm needs Ray on every node: pip install "neurender[farm]"') from None
    return ray


def plan_shot(shot: Shot, options: FarmOptions):
    from neurender.farm.chunks import plan_chunks
    from neurender.passes.folder import PassFolder

    folder = PassFolder.open(shot.pass_dir)  # shot.settings were checked where they entered (the farm CLI)
    selected = folder.manifest.select_frames(shot.settings.frames)  # the contract's one frame rule
    return plan_chunks(folder.frames, (selected[0], selected[-1]), options.chunk_size, options.overlap)


def run_farm(shots: list[Shot], options: FarmOptions, *, events: Optional[Callable[[dict], None]] = None) -> FarmReport:
    """Render ``shots`` on the Ray cluster at ``options.address``; ``events`` gets one JSON-able dict per change."""
    from neurender.farm.merge import merge_chunks

    emit = events or (lambda record: None)
    plans = [plan_shot(shot, options) for shot in shots]  # bad input fails here, before anything is submitted
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        try:
            extra = {}
            host = options.address.rsplit(":", 1)[0].strip("[]")
            if host in ("127.0.0.1", "localhost", "::1"):
                # A cluster on this machine's loopback: keep the driver there too, not on the public interface.
                extra["_node_ip_address"] = "127.0.0.1"
            ray.init(address=options.address, logging_level=logging.WARNING, log_to_driver=False, **extra)
        except ConnectionError as exc:
            raise InputError(f"cannot reach the Ray cluster at {options.address}: {exc}") from None
    report = FarmReport()
    try:
        resources = dict(num_gpus=options.gpus_per_task, num_cpus=options.cpus_per_task, max_retries=options.max_retries)
        remote_anchors = ray.remote(anchors_task)
        remote_chunk = ray.remote(chunk_task)
        pending: dict = {}
        shot_refs: dict[int, list] = {}
        for index, (shot, plan) in enumerate(zip(shots, plans)):
            settings = replace(shot.settings, frames="").to_dict()
            anchors = str(shot.anchors) if shot.anchors else None
            if anchors is None and shot.compute_anchors and shot.settings.consistency != "off":
                anchors_dir = str(Path(shot.out_dir) / ANCHORS_SUBDIR)
                anchor_settings = {**settings, "frames": shot.settings.frames}
                anchors = remote_anchors.options(**resources, name=f"nr-anchors:{Path(shot.pass_dir).name}").remote(
                    str(shot.pass_dir), anchors_dir, anchor_settings, shot.anchor_count)
            for chunk in plan:
                name = f"nr-chunk:{Path(shot.pass_dir).name}:{chunk.frames_arg}"  # the worker's process title
                ref = remote_chunk.options(**resources, name=name).remote(
                    str(shot.pass_dir), str(shot.out_dir), settings, list(chunk.core), options.overlap, anchors)
                pending[ref] = (index, chunk)
                shot_refs.setdefault(index, []).append(ref)
            emit({"event": "submitted", "shot": str(shot.pass_dir), "chunks": [c.frames_arg for c in plan]})
        failed_shots: set[int] = set()
        t0 = time.monotonic()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            index, chunk = pending.pop(ref)
            elapsed = round(time.monotonic() - t0, 3)
            record = {"shot": str(shots[index].pass_dir), "chunk": chunk.frames_arg, "elapsed": elapsed}
            try:
                done = ray.get(ref)
            except Exception as exc:  # retries exhausted, or our own error inside the task
                failed_shots.add(index)
                failure = {**record, "error": _reason(exc)}
                report.failures.append(failure)
                emit({"event": "chunk_failed", **failure})
                continue
            report.chunks_done.append(done)
            emit({"event": "chunk_done", **record, "written": done["written"], "skipped": done["skipped"],
                  "node": done["node"], "pid": done["pid"], "chunks_left": len(pending)})
        for index, shot in enumerate(shots):
            if index in failed_shots:
                continue
            merged = merge_chunks(shot.out_dir, final=True)
            report.frames_written[str(shot.out_dir)] = merged.written
            emit({"event": "shot_done", "shot": str(shot.pass_dir), "out_dir": str(shot.out_dir),
                  "merged": merged.written})
    finally:
        if started:
            ray.shutdown()
    return report


def _reason(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)  # RayTaskError keeps the original exception here
    target = cause if isinstance(cause, BaseException) else exc
    text = str(target).strip().splitlines()
    return f"{type(target).__name__}: {text[-1] if text else ''}"

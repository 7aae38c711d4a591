"""The job runner: the one entry point that renders a pass folder into frames.

The CLI (``neurender render``) and the HTTP server (``neurender serve``) are thin adapters over ``run_render``;
neither holds algorithm code.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from neurender.contract import Progress, RenderSettings
from neurender.errors import JobCancelled

log = logging.getLogger(__name__)

ProgressCallback = Callable[[Progress], None]


class CancelToken:
    """Set from another thread to stop a job at the next denoising step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise JobCancelled("job cancelled")


@dataclass
class JobSpec:
    pass_dir: Path
    out_dir: Path
    settings: RenderSettings
    save_controls: Optional[Path] = None


@dataclass
class RenderResult:
    out_dir: Path
    frames_written: list[int] = field(default_factory=list)
    frames_skipped: list[int] = field(default_factory=list)
    random_model: bool = False


def run_render(
    spec: JobSpec,
    *,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    pipelines: Optional["PipelineCache"] = None,  # noqa: F821  (neurender.models.cache.PipelineCache)
) -> RenderResult:
    """Render ``spec.pass_dir`` into ``spec.out_dir`` (``frame_0001.png`` ...), atomically, skipping done frames.

    Raises ``InputError`` subclasses for bad input, ``JobCancelled`` when ``cancel`` is set (frames already
    written stay), anything else for internal failures.
    """
    raise NotImplementedError  # implemented with the engine

"""Progress of a neural render as the artist sees it (no bpy): one monotonic fraction, a phase, a time estimate.

All frames of a shot are denoised in lockstep, so the denoising steps (``step`` of ``steps_total``) are most of the
work and decoding the frames (``frames_done`` of ``frames_total``) the rest; loading the models and deriving the
control images come first. Each phase owns a fixed share of the bar; the fraction never goes backwards, even when
a snapshot arrives out of order or a resumed job reports less than before.
"""

from __future__ import annotations

import time
from typing import Optional

# share of the bar at the START of each phase; denoising is the long part
PHASE_START = {"queued": 0.0, "loading": 0.01, "controls": 0.04, "denoise": 0.05, "decode": 0.90,
               "deflicker": 0.90, "done": 1.0}
DENOISE_END = 0.90

PHASE_WORDS = {
    "queued": "Waiting in the backend's queue",
    "loading": "Loading the models",
    "controls": "Deriving control images from the passes",
    "denoise": "Denoising",
    "decode": "Decoding frames",
    "deflicker": "Deflickering",
    "done": "Finishing",
    "interrupted": "Interrupted (the backend restarted; it resumes)",
}


def fraction(progress: dict, state: str = "") -> float:
    """The share of the job done according to one snapshot's ``progress`` (0..1)."""
    if state == "done":
        return 1.0
    phase = progress.get("phase") or ""
    steps_total = int(progress.get("steps_total") or 0)
    step = int(progress.get("step") or 0)
    frames_total = int(progress.get("frames_total") or 0)
    frames_done = int(progress.get("frames_done") or 0)
    denoised = min(1.0, step / steps_total) if steps_total > 0 else 0.0
    decoded = min(1.0, frames_done / frames_total) if frames_total > 0 else 0.0
    if phase in ("decode", "deflicker", "done"):
        return DENOISE_END + (1.0 - DENOISE_END) * decoded
    if phase == "denoise" or step > 0:
        return PHASE_START["denoise"] + (DENOISE_END - PHASE_START["denoise"]) * denoised
    return PHASE_START.get(phase, 0.0)


def format_duration(seconds: float) -> str:
    seconds = max(1, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Tracker:
    """Follows the snapshots of one job: ``update(job)`` returns the monotonic fraction; ``text`` and ``eta``.

    The time estimate appears once two denoising steps have been seen (the first step includes warm-up), from the
    rate of the fraction since the first step.
    """

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.value = 0.0
        self.phase = ""
        self.text = ""
        self.eta: Optional[float] = None
        self._first: Optional[tuple[float, float, int]] = None  # (time, fraction, step) at the first step seen

    def update(self, job: dict) -> float:
        p = job.get("progress") or {}
        state = job.get("state", "")
        now = self.clock()
        self.value = max(self.value, fraction(p, state))
        self.phase = p.get("phase") or state
        step = int(p.get("step") or 0)
        if step > 0 and self._first is None:
            self._first = (now, self.value, step)
        self.eta = None
        if self._first is not None and step >= self._first[2] + 1 and self.value < 1.0:
            t0, f0, _ = self._first
            rate = (self.value - f0) / max(1e-6, now - t0)
            if rate > 0:
                self.eta = (1.0 - self.value) / rate
        self.text = describe(job, self.value, self.eta)
        return self.value


def describe(job: dict, value: float, eta: Optional[float] = None) -> str:
    """One line: phase, step of steps, frames decoded, percent, time left."""
    p = job.get("progress") or {}
    phase = p.get("phase") or job.get("state", "")
    words = PHASE_WORDS.get(phase, phase.capitalize() if phase else "Working")
    parts = [words]
    steps_total = int(p.get("steps_total") or 0)
    frames_total = int(p.get("frames_total") or 0)
    if steps_total and phase in ("denoise", "decode", "deflicker", "done"):
        parts.append(f"step {min(int(p.get('step') or 0), steps_total)}/{steps_total}")
    if frames_total:
        parts.append(f"{int(p.get('frames_done') or 0)}/{frames_total} frames decoded")
    text = ", ".join(parts) + f" ({int(value * 100)}%)"
    if eta is not None:
        text += ", almost done" if eta < 1 else f", about {format_duration(eta)} left"
    if "frames_downloaded" in job:
        text += f", {len(job['frames_downloaded'])} downloaded"
    return text

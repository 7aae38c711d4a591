"""Chunks of a shot: plan, render one chunk with overlap, mark it complete.

A chunk owns the *core* frames ``A-B`` and renders ``[A-N, B+N]`` (clipped to the shot) into
``OUT/.chunks/AAAA-BBBB/`` with the ordinary job runner, so it inherits its durability: finished frames are skipped,
frames are written atomically, a killed chunk resumes at the denoising step it reached. When the render is done a
marker ``chunk.json`` is written atomically, and the merge step (``merge.py``) writes the final frames into ``OUT``,
blending the overlaps with its neighbours. Every chunk of a shot is rendered with the same settings and the same
anchors (``anchors.py``), so a chunk is a deterministic function of (settings, anchors, pass folder, core) on any node.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

from neurender.contract import RenderSettings, parse_frame_range
from neurender.errors import InputError
from neurender.farm.merge import CHUNK_MARKER, CHUNK_VERSION, CHUNKS_DIR, merge_chunks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chunk:
    core: tuple[int, int]
    render: tuple[int, int]

    @property
    def name(self) -> str:
        return f"{self.core[0]:04d}-{self.core[1]:04d}"

    @property
    def frames_arg(self) -> str:
        return f"{self.core[0]}-{self.core[1]}"


def chunk_for(shot_frames: Sequence[int], core: tuple[int, int], overlap: int) -> Chunk:
    """The chunk owning ``core`` with ``overlap`` extra frames on each side, clipped to the shot."""
    a, b = core
    if overlap < 0:
        raise InputError(f"overlap {overlap} must be 0 or more frames")
    first, last = min(shot_frames), max(shot_frames)
    if a < first or b > last:
        raise InputError(f"chunk frames {a}-{b} lie outside the shot's frames {first}-{last}")
    lo, hi = max(first, a - overlap), min(last, b + overlap)
    needs = (a > first) + (b < last)  # sides that will blend with a neighbour
    if overlap and needs and b - a + 1 < needs * overlap:
        raise InputError(
            f"chunk {a}-{b} has {b - a + 1} frames, fewer than the {needs * overlap} its overlaps of {overlap} need"
        )
    return Chunk(core=(a, b), render=(lo, hi))


def plan_chunks(shot_frames: Sequence[int], frames: tuple[int, int], chunk_size: int, overlap: int) -> list[Chunk]:
    """Cut ``frames`` (inclusive range of the shot) into chunks of ``chunk_size`` core frames.

    A short last piece (fewer than ``max(2 * overlap, 1)`` frames) joins the chunk before it, so every overlap fits.
    """
    if chunk_size < 1:
        raise InputError(f"chunk size {chunk_size} must be at least 1 frame")
    if overlap and chunk_size < 2 * overlap:
        raise InputError(f"chunk size {chunk_size} must be at least twice the overlap ({overlap})")
    start, end = frames
    cores = [[s, min(s + chunk_size - 1, end)] for s in range(start, end + 1, chunk_size)]
    if len(cores) > 1 and cores[-1][1] - cores[-1][0] + 1 < max(2 * overlap, 1):
        rest = cores.pop()
        cores[-1][1] = rest[1]
    return [chunk_for(shot_frames, (a, b), overlap) for a, b in cores]


def chunk_dir(out_dir: Path | str, chunk: Chunk) -> Path:
    return Path(out_dir) / CHUNKS_DIR / chunk.name


def settings_fingerprint(settings: RenderSettings, anchors_digest: str, manifest_json: str) -> str:
    """What neighbouring chunks must share to be blended: settings (not frames/overwrite), anchors, passes."""
    return settings.digest(("frames", "overwrite"), anchors=anchors_digest, manifest=manifest_json)


@dataclass
class ChunkResult:
    chunk: Chunk
    out_dir: Path
    skipped: bool = False
    frames_rendered: list[int] = field(default_factory=list)
    written: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    anchors_digest: str = ""
    random_model: bool = False

    def to_dict(self) -> dict:
        return {
            "chunk": self.chunk.frames_arg,
            "rendered": list(self.chunk.render),
            "out_dir": str(self.out_dir),
            "skipped": self.skipped,
            "frames_rendered": self.frames_rendered,
            "written": self.written,
            "pending": self.pending,
            "anchors": self.anchors_digest,
            "random_model": self.random_model,
        }


def render_chunk(
    pass_dir: Path | str,
    out_dir: Path | str,
    settings: RenderSettings,
    *,
    overlap: int = 0,
    anchors: Optional[Path | str] = None,
    progress=None,
    cancel=None,
    pipelines=None,
    merge: bool = True,
) -> ChunkResult:
    """Render the core frames ``settings.frames`` (default: the whole shot) as one chunk of a farm render.

    Idempotent: when every core frame already exists in ``out_dir`` nothing is loaded; a chunk whose render
    finished earlier is only merged again. With ``merge`` the final frames are written as soon as the neighbours
    they blend with are complete (``ChunkResult.pending`` lists the frames still waiting for a neighbour).
    """
    from neurender.frames import finished_frames, write_bytes_atomic
    from neurender.passes.folder import PassFolder
    from neurender.runner import JobSpec, run_render

    settings.check()
    out = Path(out_dir)
    shot = PassFolder.open(pass_dir)
    core_frames = shot.manifest.select_frames(settings.frames)  # the contract's frame rule (refuses a bad range)
    core = parse_frame_range(settings.frames) if settings.frames else (shot.frames[0], shot.frames[-1])
    chunk = chunk_for(shot.frames, core, overlap)
    cdir = chunk_dir(out, chunk)
    result = ChunkResult(chunk=chunk, out_dir=out)
    if not settings.overwrite and len(finished_frames(out, core_frames)) == len(core_frames):
        log.info("chunk %s: every frame already exists in %s; nothing to do", chunk.frames_arg, out)
        result.skipped = True
        return result

    if not settings.fixed_noise:
        log.warning("chunk %s: without fixed noise a frame's noise depends on its place in the chunk, so overlapping "
                    "chunks disagree more and the render differs from an unchunked one", chunk.frames_arg)
    if settings.depth_smoothing:
        log.warning("chunk %s: depth smoothing filters per-frame depth ranges over the chunk's frames only; near chunk "
                    "borders they differ slightly from a whole-shot render", chunk.frames_arg)
    chunk_settings = replace(settings, frames=f"{chunk.render[0]}-{chunk.render[1]}")
    rendered = run_render(
        JobSpec(Path(pass_dir), cdir, chunk_settings, anchors=Path(anchors) if anchors else None),
        progress=progress,
        cancel=cancel,
        pipelines=pipelines,
    )
    result.frames_rendered = rendered.frames_written
    result.anchors_digest = rendered.anchors_digest
    result.random_model = rendered.random_model
    anchors_digest = rendered.anchors_digest
    if anchors and not anchors_digest:  # every frame was already there: the runner did not open the anchors
        from neurender.farm.anchor_files import load_anchors

        anchors_digest = result.anchors_digest = load_anchors(anchors, settings).digest
    marker = {
        "version": CHUNK_VERSION,
        "core": list(chunk.core),
        "render": list(chunk.render),
        "overlap": overlap,
        "frames": [f for f in shot.frames if chunk.render[0] <= f <= chunk.render[1]],
        "fingerprint": settings_fingerprint(settings, anchors_digest, shot.manifest.to_json()),
        "anchors": anchors_digest,
    }
    write_bytes_atomic(cdir / CHUNK_MARKER, json.dumps(marker, indent=1).encode())
    if merge:
        merged = merge_chunks(out, overwrite=core_frames if settings.overwrite else ())
        result.written = [f for f in merged.written if core[0] <= f <= core[1]]
        result.pending = [f for f in merged.pending if core[0] <= f <= core[1]]
    return result

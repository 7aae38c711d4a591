"""Merge finished chunks into the final frames, blending overlaps with linear ramps so no seam shows.

Two neighbouring chunks P (core ``..b``) and Q (core ``b+1..``) both rendered the ``2n`` frames around their border
(``n`` = the overlap both actually rendered). Frame ``f`` in that zone is ``(1 - w) * P_f + w * Q_f`` with
``w = (f - (b + 1 - n) + 0.5) / (2n)``: a linear cross-fade from P to Q, symmetric about the border, the pixel-space
counterpart of the triangular window blending of DiffSynth-Studio's sliding windows (see ``engine/strategy.py``).
Frames outside any zone are the owning chunk's file, copied byte for byte.

The merge is idempotent and safe to run concurrently: it reads only chunks whose ``chunk.json`` marker exists (the
marker is written after all of the chunk's frames), skips final frames that already exist, and writes atomically.
A frame whose neighbour chunk is expected (the chunk rendered frames beyond its core on that side) but not finished
is *pending*; ``final=True`` writes pending frames from the one chunk available (for the last merge of a range whose
neighbours will never be rendered).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
from PIL import Image

from neurender.errors import InputError
from neurender.frames import frame_path, is_finished, write_bytes_atomic, write_png_atomic

log = logging.getLogger(__name__)

CHUNKS_DIR = ".chunks"
CHUNK_MARKER = "chunk.json"
CHUNK_VERSION = 1
"""The chunk folders the merge reads: ``OUT/.chunks/AAAA-BBBB/`` with frames and a ``chunk.json`` marker of this
version, written last by ``chunks.render_chunk`` (which imports this layout; the merge never imports the renderer)."""


@dataclass
class DoneChunk:
    folder: Path
    a: int
    b: int
    lo: int
    hi: int
    fingerprint: str

    def file(self, frame: int) -> Path:
        return frame_path(self.folder, frame)


@dataclass
class MergeResult:
    written: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)


def blend_weight(frame: int, border: int, n: int) -> float:
    """Weight of the upper chunk for ``frame`` in the zone ``[border - n, border + n - 1]``.

    ``border`` is the upper chunk's first core frame.
    """
    return (frame - (border - n) + 0.5) / (2 * n)


def done_chunks(out_dir: Path | str) -> list[DoneChunk]:
    """Chunks of ``out_dir`` whose marker exists and whose frames are all readable, by core start."""
    found = []
    for marker in sorted((Path(out_dir) / CHUNKS_DIR).glob(f"*/{CHUNK_MARKER}")):
        try:
            meta = json.loads(marker.read_text(encoding="utf-8"))
            if meta.get("version") != CHUNK_VERSION:
                raise ValueError(f"version {meta.get('version')}")
            chunk = DoneChunk(marker.parent, *meta["core"], *meta["render"], fingerprint=meta["fingerprint"])
            frames = meta["frames"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring chunk marker %s: %s", marker, exc)
            continue
        if all(is_finished(chunk.file(f)) for f in frames):
            found.append(chunk)
        else:
            log.warning("chunk %s has a marker but missing frames; it will be rendered again", marker.parent.name)
    return sorted(found, key=lambda c: c.a)


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64)


def blend_frames(lower: Path, upper: Path, w: float) -> np.ndarray:
    """``(1 - w) * lower + w * upper`` as uint8 (rounded)."""
    mixed = (1.0 - w) * _read(lower) + w * _read(upper)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def merge_chunks(out_dir: Path | str, *, final: bool = False, overwrite: Iterable[int] = ()) -> MergeResult:
    """Write every final frame of ``out_dir`` that its finished chunks determine (see module docstring)."""
    out = Path(out_dir)
    chunks = done_chunks(out)
    by_end = {c.b: c for c in chunks}
    by_start = {c.a: c for c in chunks}
    redo = set(overwrite)
    result = MergeResult()
    for c in chunks:
        below: Optional[DoneChunk] = by_end.get(c.a - 1)
        above: Optional[DoneChunk] = by_start.get(c.b + 1)
        for n_c in (below, above):
            if n_c is not None and n_c.fingerprint != c.fingerprint:
                raise InputError(
                    f"chunks {n_c.folder.name} and {c.folder.name} in {out} were rendered with different settings, "
                    "passes or anchors and cannot be blended; render them again with the same ones"
                )
        for f in range(c.a, c.b + 1):
            target = frame_path(out, f)
            if not c.file(f).is_file():
                continue  # not a frame of the shot
            if f not in redo and is_finished(target):
                result.skipped.append(f)
                continue
            lower, upper, w = None, None, 0.0
            if c.lo < c.a and f < c.a + (c.a - c.lo):  # may lie in the zone below
                if below is None:
                    if not final:
                        result.pending.append(f)
                        continue
                else:
                    n = min(c.a - c.lo, below.hi - below.b)
                    if f < c.a + n:
                        lower, upper, w = below, c, blend_weight(f, c.a, n)
            if lower is None and c.hi > c.b and f > c.b - (c.hi - c.b):  # may lie in the zone above
                if above is None:
                    if not final:
                        result.pending.append(f)
                        continue
                else:
                    n = min(c.hi - c.b, above.a - above.lo)
                    if f > c.b - n:
                        lower, upper, w = c, above, blend_weight(f, c.b + 1, n)
            if lower is None:
                write_bytes_atomic(target, c.file(f).read_bytes())
            else:
                write_png_atomic(target, blend_frames(lower.file(f), upper.file(f), w))
            result.written.append(f)
    if result.pending:
        log.info("%d frames wait for a neighbouring chunk: %s", len(result.pending), result.pending)
    return result

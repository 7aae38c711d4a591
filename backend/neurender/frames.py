"""Output frames on disk: atomic PNG writes and the list of frames already finished.

A frame is written to a temporary file in the same folder, flushed, fsync'ed and renamed over the final name, so a
killed process never leaves a half-written ``frame_0001.png``. A frame counts as finished only if its PNG decodes.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from neurender.contract import FRAME_FILE_PATTERN

log = logging.getLogger(__name__)


def frame_path(out_dir: Path, frame: int) -> Path:
    return Path(out_dir) / FRAME_FILE_PATTERN.format(frame=frame)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """0..1 float HxWxC -> uint8, rounding like diffusers' ``numpy_to_pil``."""
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)


_UMASK_LOCK = threading.Lock()


def process_umask() -> int:
    """The process umask, read without changing it where the OS allows (``/proc``), else set-and-restore."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename), with the mode a plain ``open`` would give
    (0666 less the umask), so other users on shared storage read the frames exactly as the umask allows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # mkstemp always creates 0600
            os.fchmod(fd, 0o666 & ~process_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_png_atomic(path: Path, image: np.ndarray | Image.Image) -> None:
    pil = image if isinstance(image, Image.Image) else Image.fromarray(to_uint8(image) if image.dtype != np.uint8 else image)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())


def is_finished(path: Path) -> bool:
    """True if ``path`` is a complete, decodable PNG."""
    if not path.is_file():
        return False
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:
        log.warning("frame file %s is unreadable; it will be rendered again", path)
        return False


def finished_frames(out_dir: Path, frames: Iterable[int]) -> list[int]:
    return [f for f in frames if is_finished(frame_path(out_dir, f))]


def remove_stale_temporaries(out_dir: Path) -> None:
    """Temporaries left by a killed writer are never valid frames; remove them."""
    out_dir = Path(out_dir)
    if out_dir.is_dir():
        for tmp in out_dir.glob(".frame_*.tmp"):
            tmp.unlink(missing_ok=True)

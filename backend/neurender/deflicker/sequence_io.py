"""Reading and writing the image sequences the ``neurender deflicker`` command works on (PNG 8/16-bit, EXR).

Frames are numbered by the last run of digits in the file name (``shot_0012.png`` -> 12), which is how they are
matched to the frames of a pass folder. PNG keeps its bit depth and alpha channel (alpha is passed through untouched);
EXR files are read as linear RGB (channels ``R, G, B`` with any layer prefix) and written back as ``R, G, B``.
Writes are atomic: a temporary file in the same folder is renamed over the final name.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from neurender.errors import InputError

EXTENSIONS = (".png", ".exr")
_NUMBER = re.compile(r"(\d+)(?!.*\d)")


@dataclass
class SequenceFrame:
    number: int
    path: Path


@dataclass
class LoadedImage:
    rgb: np.ndarray
    """(H, W, 3) float32: 0..1 for PNG, linear for EXR."""
    kind: str
    """"png8", "png16" or "exr"."""
    alpha: Optional[np.ndarray] = None


def list_sequence(folder: Path) -> list[SequenceFrame]:
    """The PNG/EXR frames in ``folder`` sorted by frame number; ``InputError`` if none or numbers repeat."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"frames folder {folder} does not exist or is not a folder")
    frames: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in EXTENSIONS or path.name.startswith("."):
            continue
        m = _NUMBER.search(path.stem)
        if m is None:
            raise InputError(f"{path.name} in {folder} has no frame number in its name (expected e.g. frame_0012.png)")
        n = int(m.group(1))
        if n in frames:
            raise InputError(f"{frames[n].name} and {path.name} in {folder} both claim frame {n}")
        frames[n] = path
    if not frames:
        raise InputError(f"{folder} contains no PNG or EXR frames")
    return [SequenceFrame(n, frames[n]) for n in sorted(frames)]


def read_image(path: Path) -> LoadedImage:
    path = Path(path)
    if path.suffix.lower() == ".exr":
        from neurender.passes.exr import read_exr

        channels = read_exr(path)
        rgb = []
        for c in "RGB":
            names = [k for k in channels if k == c or k.endswith("." + c)]
            if not names:
                raise InputError(f"{path} has no {c} channel (channels: {', '.join(sorted(channels)[:8])})")
            rgb.append(channels[sorted(names, key=len)[0]])
        return LoadedImage(np.stack(rgb, -1).astype(np.float32), "exr")
    import cv2

    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise InputError(f"{path} is not a readable PNG image")
    if data.ndim == 2:
        data = np.repeat(data[..., None], 3, axis=-1)
    scale = 65535.0 if data.dtype == np.uint16 else 255.0
    kind = "png16" if data.dtype == np.uint16 else "png8"
    alpha = data[..., 3] if data.shape[-1] == 4 else None
    rgb = data[..., 2::-1].astype(np.float32) / scale
    return LoadedImage(np.ascontiguousarray(rgb), kind, alpha)


def _atomic_target(path: Path) -> tuple[int, str]:
    from neurender.frames import process_umask

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    if hasattr(os, "fchmod"):  # mkstemp creates 0600; the frames get the mode a plain open would give
        os.fchmod(fd, 0o666 & ~process_umask())
    return fd, tmp


def write_image(path: Path, rgb: np.ndarray, like: LoadedImage) -> None:
    """Write ``rgb`` (H, W, 3) in the format of ``like`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _atomic_target(path)
    os.close(fd)
    try:
        if like.kind == "exr":
            from neurender.passes.exr import write_multilayer_exr

            write_multilayer_exr(tmp, {c: rgb[..., k] for k, c in enumerate("RGB")})
        else:
            import cv2

            scale, dtype = (65535.0, np.uint16) if like.kind == "png16" else (255.0, np.uint8)
            data = (np.clip(rgb, 0.0, 1.0) * scale).round().astype(dtype)[..., ::-1]
            if like.alpha is not None:
                data = np.concatenate([data, like.alpha[..., None].astype(dtype)], -1)
            ok, buf = cv2.imencode(".png", np.ascontiguousarray(data))
            if not ok:
                raise OSError(f"could not encode {path.name}")
            Path(tmp).write_bytes(buf.tobytes())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

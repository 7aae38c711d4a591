"""Multilayer OpenEXR reading and writing through the ``OpenEXR`` module (3.x API).

Blender 4.5 writes one single-part scanline file per frame whose channel names carry the view layer and pass, e.g.
``ViewLayer.Depth.Z`` or ``ViewLayer.Combined.R``. Blender 5.0 writes one part per pass; the channels of all parts are
merged here into one flat ``name -> array`` mapping so the rest of neurender never sees the difference. Rows come
top-first (the OpenEXR module returns the data window in file order, which is INCREASING_Y = top to bottom).

A corrupt or truncated file is reported as ``PassFolderError`` naming the file; the OpenEXR library prints its own
diagnostics to stderr, which we cannot silence, but its verdict (no readable part) is turned into one clear sentence.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np

from neurender.errors import PassFolderError

log = logging.getLogger(__name__)


def _open(path: Path, header_only: bool):
    import OpenEXR

    if not path.is_file():
        raise PassFolderError(f"{path}: file not found")
    try:
        return OpenEXR.File(str(path), separate_channels=True, header_only=header_only)
    except Exception as exc:  # the binding raises RuntimeError/IndexError/ValueError for broken files
        raise PassFolderError(f"{path}: not a readable OpenEXR file ({exc})") from None


def _full_name(part_name: str, channel: str, multipart: bool) -> str:
    """Channel name as Blender 4.5 would write it, also for Blender 5.0 multi-part files.

    In a multi-part file a part named ``ViewLayer.Depth`` may hold a channel named just ``Z``; prefix it then.
    """
    if multipart and part_name and not channel.startswith(part_name + "."):
        return f"{part_name}.{channel}"
    return channel


def read_exr(path: Path | str) -> dict[str, np.ndarray]:
    """Read every channel of a (multi-part, multilayer) EXR file: ``name -> float32 HxW``, rows top-first.

    Raises ``PassFolderError`` for a missing, corrupt or truncated file (a truncated file yields no readable part in
    the OpenEXR binding, which we detect).
    """
    path = Path(path)
    f = _open(path, header_only=False)
    parts = list(getattr(f, "parts", []) or [])
    if not parts:
        raise PassFolderError(f"{path}: the EXR file is corrupt or truncated (no readable image data)")
    multipart = len(parts) > 1
    out: dict[str, np.ndarray] = {}
    for part in parts:
        channels = part.channels
        if not channels:
            raise PassFolderError(f"{path}: the EXR file is corrupt or truncated (part {part.name()!r} has no pixels)")
        for name, channel in channels.items():
            pixels = channel.pixels
            if pixels is None or getattr(pixels, "ndim", 0) != 2:
                raise PassFolderError(f"{path}: channel {name!r} could not be read (corrupt or truncated file)")
            out[_full_name(part.name(), name, multipart)] = np.ascontiguousarray(pixels, dtype=np.float32)
    return out


def exr_header_channels(path: Path | str) -> list[str]:
    """Channel names of all parts, from the headers only (cheap: no pixel data is read)."""
    path = Path(path)
    f = _open(path, header_only=True)
    parts = list(getattr(f, "parts", []) or [])
    if not parts:
        raise PassFolderError(f"{path}: the EXR header cannot be read")
    multipart = len(parts) > 1
    names = []
    for part in parts:
        for ch in part.header.get("channels", []):
            names.append(_full_name(part.name(), ch.name, multipart))
    return names


def exr_size(path: Path | str) -> tuple[int, int]:
    """``(width, height)`` of the first part's data window, from the header only."""
    path = Path(path)
    f = _open(path, header_only=True)
    parts = list(getattr(f, "parts", []) or [])
    if not parts:
        raise PassFolderError(f"{path}: the EXR header cannot be read")
    try:
        lo, hi = parts[0].header["dataWindow"]
        return int(hi[0]) - int(lo[0]) + 1, int(hi[1]) - int(lo[1]) + 1
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise PassFolderError(f"{path}: the EXR header has no valid data window ({exc})") from None


def write_multilayer_exr(path: Path | str, channels: Mapping[str, np.ndarray], compression: str = "zip") -> None:
    """Write a single-part multilayer EXR (float32 channels, ``"zip"`` or ``"none"`` compression).

    Channel names are written verbatim (e.g. ``ViewLayer.Depth.Z``), which is how Blender 4.5 names the channels of
    its multilayer output. Meant for fixtures and tests; all channels must share one HxW shape.
    """
    import OpenEXR

    if not channels:
        raise ValueError("write_multilayer_exr needs at least one channel")
    modes = {"zip": OpenEXR.ZIP_COMPRESSION, "none": OpenEXR.NO_COMPRESSION}
    if compression not in modes:
        raise ValueError(f"compression must be one of {', '.join(modes)}, not {compression!r}")
    arrays = {str(k): np.ascontiguousarray(v, dtype=np.float32) for k, v in channels.items()}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"all channels must be 2-D arrays of one shape, got {sorted(shapes)}")
    header = {"compression": modes[compression], "type": OpenEXR.scanlineimage}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    OpenEXR.File(header, arrays).write(str(path))

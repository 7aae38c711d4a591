"""A pass folder: ``manifest.json`` plus one multilayer EXR per frame, validated up front.

``PassFolder.open`` checks everything that can be checked cheaply before any work starts: the manifest (schema,
fields), the requested frame range, that every selected frame file exists, and each file's header (resolution and
required channels). ``PassFolder.foreground_ranges`` is the pixel-level pre-pass: it reads every selected frame once
(a truncated file, NaN, -inf, zero or negative depth are refused there, naming the frame and file) and keeps each
frame's depth range, which the depth control's shot range reuses. The runner calls it before any model is loaded
and before anything is written to the output folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from neurender.contract import (
    DEPTH_BACKGROUND_THRESHOLD,
    ContractError,
    FrameCamera,
    FrameEntry,
    PassManifest,
)
from neurender.errors import PassFolderError
from neurender.passes.exr import exr_header_channels, exr_size, read_exr

log = logging.getLogger(__name__)

REQUIRED_COMPONENTS: dict[str, tuple[str, ...]] = {
    "depth": ("Z",),
    "normal": ("X", "Y", "Z"),
    "vector": ("X", "Y", "Z", "W"),
    "object_index": ("X",),
    "combined": ("R", "G", "B"),
}
"""Channel suffixes each pass must have below its prefix (``ViewLayer.Depth`` + ``.Z``)."""

# Blender 4.5 calls the object index pass "IndexOB", Blender 5.0 "Object Index"; accept either spelling.
_ALIASES = {"IndexOB": "Object Index", "Object Index": "IndexOB"}

_MAX_LISTED = 5


def _alternate_prefix(prefix: str) -> Optional[str]:
    head, _, last = prefix.rpartition(".")
    if last in _ALIASES:
        return f"{head}.{_ALIASES[last]}" if head else _ALIASES[last]
    return None


def _resolve_prefix(names: set[str], prefix: str, components: tuple[str, ...]) -> Optional[str]:
    """The channel prefix under which all ``components`` exist (the given one or its 4.5/5.0 alias), else None."""
    for candidate in (prefix, _alternate_prefix(prefix)):
        if candidate and all(f"{candidate}.{c}" in names for c in components):
            return candidate
    return None


@dataclass
class FramePasses:
    """The passes of one frame as arrays (rows top-first, pixels of the pass folder's resolution).

    ``depth`` is planar view-space Z in scene units with ``+inf`` where no geometry was hit; ``normal`` is world
    space; ``vector`` is Blender's vector pass as stored (pixels, y up: XY = pix(prev) - pix(cur),
    ZW = pix(cur) - pix(next)); ``combined`` is linear RGB.
    """

    frame: int
    depth: np.ndarray
    normal: Optional[np.ndarray] = None
    vector: Optional[np.ndarray] = None
    object_index: Optional[np.ndarray] = None
    combined: Optional[np.ndarray] = None
    camera: Optional[FrameCamera] = None

    @property
    def background(self) -> np.ndarray:
        """HxW bool, True where no geometry was hit."""
        return ~np.isfinite(self.depth)


class PassFolder:
    """A validated pass folder. Create with ``PassFolder.open(path, frames=(first, last))``."""

    def __init__(self, path: Path, manifest: PassManifest, frames: list[int]):
        self.path = path
        self.manifest = manifest
        self.frames = frames
        self.width = manifest.width
        self.height = manifest.height
        self._entries: dict[int, FrameEntry] = {e.frame: e for e in manifest.frames}
        self._ranges: Optional[list[Optional[tuple[float, float]]]] = None

    # ----------------------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path | str, frames: str | tuple[int, int] | None = None) -> "PassFolder":
        """Open and validate a pass folder; ``frames`` is an optional ``"A-B"`` or inclusive ``(first, last)`` subset
        (``PassManifest.select_frames``)."""
        path = Path(path)
        try:  # the contract's rules: manifest reading and frame selection (the server applies the same at submit)
            manifest = PassManifest.read(path)
            selected = manifest.select_frames(frames)
        except ContractError as exc:
            raise PassFolderError(str(exc), kind=exc.kind) from None

        folder = cls(path, manifest, selected)
        folder._check_files()
        return folder

    def _check_files(self) -> None:
        missing = [f for f in self.frames if not self.frame_file(f).is_file()]
        if missing:
            names = ", ".join(self._entries[f].file for f in missing[:_MAX_LISTED])
            more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
            raise PassFolderError(
                f"{len(missing)} of {len(self.frames)} frame files are missing from {self.path}: {names}{more}"
            )
        for f in self.frames:
            file = self.frame_file(f)
            size = exr_size(file)
            if size != (self.width, self.height):
                raise PassFolderError(
                    f"frame {f}: {file.name} is {size[0]}x{size[1]} but the manifest says {self.width}x{self.height}"
                )
            names = set(exr_header_channels(file))
            for pass_name, prefix in self.manifest.passes.items():
                components = REQUIRED_COMPONENTS[pass_name]
                if _resolve_prefix(names, prefix, components) is None:
                    want = ", ".join(f"{prefix}.{c}" for c in components)
                    raise PassFolderError(
                        f"frame {f}: {file.name} lacks the {pass_name} pass (expected channels {want})"
                    )

    def foreground_ranges(self) -> list[Optional[tuple[float, float]]]:
        """The pixel-level pre-pass: read every selected frame once (validating its data, see ``read``) and return
        each frame's (min, max) finite depth, or None for a frame that shows only background. Computed once."""
        if self._ranges is None:
            ranges: list[Optional[tuple[float, float]]] = []
            for f in self.frames:
                depth = self.read(f).depth
                finite = depth[np.isfinite(depth)]
                ranges.append((float(finite.min()), float(finite.max())) if finite.size else None)
            self._ranges = ranges
        return self._ranges

    # ----------------------------------------------------------------------------------------------------------
    def frame_file(self, frame: int) -> Path:
        entry = self._entries.get(frame)
        if entry is None:
            raise PassFolderError(f"frame {frame} is not part of the pass folder {self.path}")
        return self.path / entry.file

    def camera(self, frame: int) -> Optional[FrameCamera]:
        entry = self._entries.get(frame)
        return entry.camera if entry is not None else None

    def has_pass(self, name: str) -> bool:
        return name in self.manifest.passes

    def read(self, frame: int) -> FramePasses:
        """Read one frame's passes; raises ``PassFolderError`` naming the frame for corrupt data."""
        if frame not in self.frames:
            raise PassFolderError(
                f"frame {frame} is not among the selected frames {self.frames[0]}-{self.frames[-1]} of {self.path}"
            )
        file = self.frame_file(frame)
        try:
            channels = read_exr(file)
        except PassFolderError as exc:
            raise PassFolderError(f"frame {frame}: {exc}") from None
        names = set(channels)

        def take(pass_name: str) -> Optional[np.ndarray]:
            prefix = self.manifest.passes.get(pass_name)
            if prefix is None:
                return None
            components = REQUIRED_COMPONENTS[pass_name]
            resolved = _resolve_prefix(names, prefix, components)
            if resolved is None:
                raise PassFolderError(f"frame {frame}: {file.name} lacks the {pass_name} pass ({prefix}.*)")
            arrays = [channels[f"{resolved}.{c}"] for c in components]
            for a in arrays:
                if a.shape != (self.height, self.width):
                    raise PassFolderError(
                        f"frame {frame}: {file.name} channel of {pass_name} is {a.shape[1]}x{a.shape[0]}, "
                        f"expected {self.width}x{self.height}"
                    )
            return arrays[0] if len(arrays) == 1 else np.stack(arrays, axis=-1)

        depth = self._clean_depth(frame, file, take("depth"))
        object_index = take("object_index")
        if object_index is not None:
            object_index = np.rint(np.nan_to_num(object_index, nan=0.0)).astype(np.int32)
        return FramePasses(
            frame=frame,
            depth=depth,
            normal=take("normal"),
            vector=take("vector"),
            object_index=object_index,
            combined=take("combined"),
            camera=self.camera(frame),
        )

    def _clean_depth(self, frame: int, file: Path, z: Optional[np.ndarray]) -> np.ndarray:
        """Validate raw depth and map background to ``+inf``.

        Background is ``+inf``, anything ``>= DEPTH_BACKGROUND_THRESHOLD`` (Cycles writes 1e10), or anything beyond
        the camera's clip end (EEVEE writes about 1000.5 with clip end 1000; no real hit can lie beyond clip end).
        """
        assert z is not None  # the manifest contract guarantees a depth pass
        bad = np.isnan(z) | (z <= 0)
        count = int(bad.sum())
        if count:
            raise PassFolderError(
                f"frame {frame}: {file.name} has {count} depth pixels that are NaN, -inf, zero or negative "
                "(depth must be positive view-space Z; background should be +inf or 1e10)"
            )
        limit = min(DEPTH_BACKGROUND_THRESHOLD, self.manifest.clip_end * (1.0 + 1e-6))
        out = z.astype(np.float32, copy=True)
        out[~(out < limit)] = np.inf
        return out

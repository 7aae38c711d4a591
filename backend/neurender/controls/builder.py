"""Control images for every frame of a pass folder, at the render resolution.

One ``ControlBuilder`` per job: the depth normalisation range is decided once in ``__init__`` (shot-wide, or a
Savitzky-Golay-smoothed per-frame range), so frames rendered in any order or batch get identical controls.
Controls are computed at the pass resolution and resized to the render size with area filtering when shrinking and
bilinear filtering when enlarging.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from neurender.contract import CONTROL_FILE_PATTERN, CONTROL_KINDS  # the file name shared with the add-on
from neurender.controls.depth import depth_to_control
from neurender.controls.edges import geometric_edges
from neurender.controls.normal import NORMAL_CONVENTIONS, normals_to_control
from neurender.controls.smoothing import per_frame_depth_ranges
from neurender.errors import InputError, PassFolderError
from neurender.frames import to_uint8, write_png_atomic
from neurender.passes.folder import PassFolder

log = logging.getLogger(__name__)



def resize_control(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize an HxW or HxWxC float image: area filter when shrinking, bilinear when enlarging."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    shrinking = width <= w and height <= h
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image, dtype=np.float32), (width, height), interpolation=interp)


class ControlBuilder:
    def __init__(
        self,
        folder: PassFolder,
        kinds: Sequence[str],
        width: int,
        height: int,
        depth_smoothing: int = 0,
        normal_convention: str = "bae",
    ):
        unknown = [k for k in kinds if k not in CONTROL_KINDS]
        if unknown:
            raise InputError(f"control kind {unknown[0]!r} is not one of {', '.join(CONTROL_KINDS)}")
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            raise InputError(f"control image size {width}x{height} must be positive integers")
        if depth_smoothing != 0 and not (depth_smoothing >= 3 and depth_smoothing % 2 == 1):
            raise InputError(f"depth smoothing window {depth_smoothing} must be 0 (off) or an odd number >= 3")
        if normal_convention not in NORMAL_CONVENTIONS:
            raise InputError(f"normal convention {normal_convention!r} is not one of {', '.join(NORMAL_CONVENTIONS)}")
        self.folder = folder
        self.kinds = list(dict.fromkeys(kinds))
        self.width = width
        self.height = height
        self.normal_convention = normal_convention
        if "normal" in self.kinds:
            if not folder.has_pass("normal"):
                raise PassFolderError(
                    f"the pass folder {folder.path} has no normal pass, which the normal ControlNet needs"
                )
            no_camera = [f for f in folder.frames if folder.camera(f) is None]
            if no_camera:
                listed = ", ".join(str(f) for f in no_camera[:5])
                raise PassFolderError(
                    f"manifest of {folder.path} has no camera for frames {listed}: the normal control needs each "
                    "frame's camera to turn world normals into camera space"
                )
        folder.foreground_ranges()  # the pixel pre-pass: every frame read once, corrupt data refused up front
        self.depth_ranges: dict[int, tuple[float, float]] = (
            per_frame_depth_ranges(folder, depth_smoothing) if "depth" in self.kinds else {}
        )

    def arrays(self, frame: int) -> dict[str, np.ndarray]:
        """Float controls in 0..1, HxWx3 at the render size, keyed by kind."""
        passes = self.folder.read(frame)
        out: dict[str, np.ndarray] = {}
        for kind in self.kinds:
            if kind == "depth":
                near, far = self.depth_ranges[frame]
                img = np.repeat(depth_to_control(passes.depth, near, far)[..., None], 3, axis=-1)
            elif kind == "normal":
                assert passes.normal is not None and passes.camera is not None  # checked in __init__
                img = normals_to_control(
                    passes.normal, passes.camera.world_to_camera, background=passes.background,
                    convention=self.normal_convention,
                )
            else:
                edges = geometric_edges(passes.depth, passes.normal, passes.object_index)
                img = np.repeat(edges[..., None], 3, axis=-1)
            img = resize_control(img, self.width, self.height)
            out[kind] = np.clip(img, 0.0, 1.0).astype(np.float32)
        return out

    def images(self, frame: int) -> dict[str, Image.Image]:
        """RGB PIL images at (width, height), one per requested kind."""
        return {kind: Image.fromarray(to_uint8(a)) for kind, a in self.arrays(frame).items()}

    def save(self, frame: int, out_dir: Path) -> list[Path]:
        """Write ``<out_dir>/<kind>_<frame:04d>.png`` for every kind, atomically; returns the paths."""
        out_dir = Path(out_dir)
        paths = []
        for kind, image in self.images(frame).items():
            path = out_dir / CONTROL_FILE_PATTERN.format(kind=kind, frame=frame)
            write_png_atomic(path, image)
            paths.append(path)
        return paths

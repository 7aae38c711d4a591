"""Analytic pass folders for tests, written exactly the way Blender 4.5 writes them.

The scene, seen by a pinhole camera at the world origin looking down -Z (``world_to_camera`` = identity, Blender
convention: +X right, +Y up, the camera looks down -Z):

* sky: the top ``sky_rows`` rows hit nothing (depth 1e10, normal 0, object index 0, vector 0);
* a wall: the plane z = -``wall_depth`` facing the camera (world normal +Z, object index 1), static;
* a floor (optional): the plane y = -h below the wall (world normal +Y, object index 2), static; ``h`` is chosen so the
  floor meets the wall at row ``floor_top``; its depth grows towards the horizon;
* a square: a plane patch at depth ``square_depth`` facing the camera (world normal +Z, object index 3) that moves by
  ``motion = (dx, dy)`` pixels per frame in image coordinates (x right, y down). A fronto-parallel plane at constant
  depth moves rigidly in the image, so its vector pass is exact: Blender stores pixels with y up,
  XY = pix(prev) - pix(cur) = (-dx, +dy) and ZW = pix(cur) - pix(next) = (-dx, +dy).

Pixel (row i, column j) covers image point (j + 0.5, i + 0.5); a pixel belongs to the square when its centre lies in
the square's box. Colours are smooth textures attached to each surface (the square's texture moves with it), linear.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from neurender.contract import KNOWN_PASSES, PASS_FILE_PATTERN, FrameCamera, FrameEntry, PassManifest
from neurender.passes.exr import write_multilayer_exr

SKY, WALL, FLOOR, SQUARE = 0, 1, 2, 3
"""Object indices of the synthetic scene."""


@dataclass
class SyntheticScene:
    frames: int = 8
    width: int = 64
    height: int = 48
    motion: tuple[float, float] = (1.0, 0.0)
    frame_start: int = 1
    square_size: Optional[float] = None
    """Side in pixels (default: a third of the smaller image side)."""
    square_start: Optional[tuple[float, float]] = None
    """Top-left corner of the square at ``frame_start`` in image coordinates (default: left of centre)."""
    wall_depth: float = 10.0
    square_depth: float = 4.0
    sky_rows: Optional[int] = None
    """Rows of empty sky at the top (default: height // 6)."""
    floor: bool = True
    floor_top: Optional[int] = None
    """First floor row (default: three quarters down)."""
    focal: Optional[float] = None
    """fx = fy in pixels (default: the image width)."""
    background_depth: float = 1e10
    fps: float = 24.0
    clip_start: float = 0.1
    clip_end: float = 100.0
    layer: str = "ViewLayer"
    object_index_name: str = "IndexOB"
    """"IndexOB" as Blender 4.5 names it, "Object Index" as Blender 5.0 does."""
    passes: Sequence[str] = field(default_factory=lambda: tuple(KNOWN_PASSES))

    def __post_init__(self) -> None:
        w, h = self.width, self.height
        if self.square_size is None:
            self.square_size = float(round(min(w, h) / 3))
        if self.sky_rows is None:
            self.sky_rows = h // 6
        if self.floor_top is None:
            self.floor_top = int(round(h * 0.75))
        if self.square_start is None:
            self.square_start = (round(w * 0.25), float(self.sky_rows + max(1, h // 12)))
        if self.focal is None:
            self.focal = float(w)

    # ------------------------------------------------------------------------------------------------------------
    @property
    def frame_numbers(self) -> list[int]:
        return list(range(self.frame_start, self.frame_start + self.frames))

    @property
    def cx(self) -> float:
        return self.width / 2.0

    @property
    def cy(self) -> float:
        return self.height / 2.0

    def camera(self, frame: int) -> FrameCamera:
        return FrameCamera(
            world_to_camera=[[1.0 if r == c else 0.0 for c in range(4)] for r in range(4)],
            fx=float(self.focal), fy=float(self.focal), cx=self.cx, cy=self.cy,
        )

    def square_box(self, frame: int) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` of the square at ``frame`` in image coordinates."""
        t = frame - self.frame_start
        x0 = self.square_start[0] + self.motion[0] * t
        y0 = self.square_start[1] + self.motion[1] * t
        return x0, y0, x0 + self.square_size, y0 + self.square_size

    def _grid(self) -> tuple[np.ndarray, np.ndarray]:
        ys, xs = np.mgrid[0 : self.height, 0 : self.width].astype(np.float64)
        return xs + 0.5, ys + 0.5

    def square_mask(self, frame: int) -> np.ndarray:
        x, y = self._grid()
        x0, y0, x1, y1 = self.square_box(frame)
        return (x >= x0) & (x < x1) & (y >= y0) & (y < y1)

    def sky_mask(self) -> np.ndarray:
        _, y = self._grid()
        return y < self.sky_rows

    def floor_mask(self) -> np.ndarray:
        _, y = self._grid()
        return (y >= self.floor_top) if self.floor else np.zeros((self.height, self.width), bool)

    def square_boundary(self, frame: int) -> np.ndarray:
        """Square pixels with a 4-neighbour outside the square: the silhouette on its foreground side."""
        m = self.square_mask(frame)
        inner = m.copy()
        inner[1:, :] &= m[:-1, :]
        inner[:-1, :] &= m[1:, :]
        inner[:, 1:] &= m[:, :-1]
        inner[:, :-1] &= m[:, 1:]
        inner[0, :] = inner[-1, :] = False
        inner[:, 0] = inner[:, -1] = False
        return m & ~inner

    def object_index(self, frame: int) -> np.ndarray:
        idx = np.full((self.height, self.width), WALL, np.int32)
        idx[self.floor_mask()] = FLOOR
        idx[self.sky_mask()] = SKY
        idx[self.square_mask(frame)] = SQUARE
        return idx

    def depth(self, frame: int) -> np.ndarray:
        """Planar view-space depth, ``background_depth`` for the sky."""
        _, y = self._grid()
        z = np.full((self.height, self.width), self.wall_depth, np.float64)
        if self.floor:
            # floor plane y = -h: a pixel ray (y_cam = -(v - cy) / f per unit depth) meets it at z = f h / (v - cy);
            # h makes the floor reach depth wall_depth at row floor_top (a pixel edge)
            h = self.wall_depth * (self.floor_top - self.cy) / self.focal
            fm = self.floor_mask()
            z[fm] = self.focal * h / (y[fm] - self.cy)
        z[self.sky_mask()] = self.background_depth
        z[self.square_mask(frame)] = self.square_depth
        return z.astype(np.float32)

    def normal_world(self, frame: int) -> np.ndarray:
        n = np.zeros((self.height, self.width, 3), np.float32)
        n[..., 2] = 1.0
        fm = self.floor_mask()
        n[fm] = (0.0, 1.0, 0.0)
        n[self.sky_mask()] = 0.0
        n[self.square_mask(frame)] = (0.0, 0.0, 1.0)
        return n

    def vector(self, frame: int) -> np.ndarray:
        """Blender's vector pass (pixels, y up): XY = pix(prev) - pix(cur), ZW = pix(cur) - pix(next)."""
        v = np.zeros((self.height, self.width, 4), np.float32)
        dx, dy = self.motion
        v[self.square_mask(frame)] = (-dx, dy, -dx, dy)
        return v

    def flow_to_next(self, frame: int) -> np.ndarray:
        """Exact forward flow in image coordinates (x right, y down), HxWx2: where each pixel goes at frame + 1."""
        f = np.zeros((self.height, self.width, 2), np.float32)
        f[self.square_mask(frame)] = self.motion
        return f

    def combined(self, frame: int) -> np.ndarray:
        x, y = self._grid()
        rgb = np.empty((self.height, self.width, 3), np.float64)
        # wall: a static smooth pattern
        rgb[..., 0] = 0.45 + 0.25 * np.sin(2 * math.pi * x / 16.0)
        rgb[..., 1] = 0.40 + 0.20 * np.cos(2 * math.pi * y / 12.0)
        rgb[..., 2] = 0.35 + 0.15 * np.sin(2 * math.pi * (x + y) / 20.0)
        fm = self.floor_mask()
        rgb[fm] = np.stack([0.30 + 0.10 * np.sin(x[fm] / 3.0), 0.25 + 0.05 * np.cos(y[fm]), 0.2 + 0 * x[fm]], -1)
        rgb[self.sky_mask()] = (0.2, 0.4, 0.9)
        # square: texture in its own coordinates, so it moves exactly with the square
        m = self.square_mask(frame)
        x0, y0, _, _ = self.square_box(frame)
        u, v = x[m] - x0, y[m] - y0
        rgb[m] = np.stack(
            [0.85 + 0.1 * np.sin(u / 2.0), 0.25 + 0.2 * np.sin(v / 2.5), 0.15 + 0.1 * np.cos((u + v) / 3.0)], -1
        )
        return rgb.astype(np.float32)

    # ------------------------------------------------------------------------------------------------------------
    def channels(self, frame: int) -> dict[str, np.ndarray]:
        """The EXR channels of one frame, named exactly as Blender 4.5 names them."""
        L = self.layer
        out: dict[str, np.ndarray] = {}
        if "depth" in self.passes:
            out[f"{L}.Depth.Z"] = self.depth(frame)
        if "normal" in self.passes:
            n = self.normal_world(frame)
            for i, c in enumerate("XYZ"):
                out[f"{L}.Normal.{c}"] = n[..., i]
        if "vector" in self.passes:
            v = self.vector(frame)
            for i, c in enumerate("XYZW"):
                out[f"{L}.Vector.{c}"] = v[..., i]
        if "object_index" in self.passes:
            out[f"{L}.{self.object_index_name}.X"] = self.object_index(frame).astype(np.float32)
        if "combined" in self.passes:
            rgb = self.combined(frame)
            for i, c in enumerate("RGB"):
                out[f"{L}.Combined.{c}"] = rgb[..., i]
            out[f"{L}.Combined.A"] = np.ones((self.height, self.width), np.float32)
        return out

    def pass_prefixes(self) -> dict[str, str]:
        names = {
            "depth": "Depth", "normal": "Normal", "vector": "Vector",
            "object_index": self.object_index_name, "combined": "Combined",
        }
        return {p: f"{self.layer}.{names[p]}" for p in self.passes}

    def depth_range(self) -> tuple[float, float]:
        """Exact (near, far) of the finite depth over all frames."""
        lo, hi = math.inf, -math.inf
        for f in self.frame_numbers:
            z = self.depth(f)
            z = z[z < 1e9]
            lo, hi = min(lo, float(z.min())), max(hi, float(z.max()))
        return lo, hi

    def manifest(self, with_depth_range: bool = False) -> PassManifest:
        frames = self.frame_numbers
        return PassManifest(
            frame_start=frames[0],
            frame_end=frames[-1],
            fps=self.fps,
            width=self.width,
            height=self.height,
            clip_start=self.clip_start,
            clip_end=self.clip_end,
            passes=self.pass_prefixes(),
            frames=[FrameEntry(frame=f, file=PASS_FILE_PATTERN.format(frame=f), camera=self.camera(f)) for f in frames],
            depth_range=self.depth_range() if with_depth_range else None,
            scene="synthetic",
            generator="neurender tests/backend/support/synthetic_passes.py",
        )

    def write(self, path: Path | str, with_depth_range: bool = False, compression: str = "zip",
              frames: Optional[Iterable[int]] = None) -> PassManifest:
        """Write manifest.json and the EXR of each frame (all, or only ``frames``) into ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        manifest = self.manifest(with_depth_range)
        manifest.check()
        for f in self.frame_numbers if frames is None else frames:
            write_multilayer_exr(path / PASS_FILE_PATTERN.format(frame=f), self.channels(f), compression=compression)
        (path / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")
        return manifest


def write_synthetic_pass_folder(
    path: Path | str,
    frames: int = 8,
    width: int = 64,
    height: int = 48,
    motion: tuple[float, float] = (1.0, 0.0),
    *,
    with_depth_range: bool = False,
    compression: str = "zip",
    **scene: object,
) -> PassManifest:
    """Write a synthetic pass folder (see the module docstring); extra keywords go to ``SyntheticScene``."""
    s = SyntheticScene(frames=frames, width=width, height=height, motion=motion, **scene)  # type: ignore[arg-type]
    return s.write(path, with_depth_range=with_depth_range, compression=compression)

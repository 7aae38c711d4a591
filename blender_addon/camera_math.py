"""Pure camera math (no bpy): pinhole intrinsics from Blender camera data, view matrices, depth ranges.

Intrinsics follow Blender's own projection (``BKE_camera_params_compute_viewplane``): the sensor fit picks the
image axis that spans the sensor, the pixel aspect scales the other axis, and lens shift is a fraction of the
larger ("fitted") image dimension. Image convention of the contract: origin at the top-left pixel corner, y down.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence


def sensor_fit_axis(sensor_fit: str, width_px: float, height_px: float) -> str:
    """'HORIZONTAL' or 'VERTICAL': which image axis spans the sensor ('AUTO' picks the larger one)."""
    if sensor_fit == "AUTO":
        return "HORIZONTAL" if width_px >= height_px else "VERTICAL"
    if sensor_fit not in ("HORIZONTAL", "VERTICAL"):
        raise ValueError(f"sensor fit {sensor_fit!r} is not AUTO, HORIZONTAL or VERTICAL")
    return sensor_fit


def intrinsics(
    *,
    lens_mm: float,
    sensor_width_mm: float,
    sensor_height_mm: float,
    sensor_fit: str,
    width: int,
    height: int,
    pixel_aspect_x: float = 1.0,
    pixel_aspect_y: float = 1.0,
    shift_x: float = 0.0,
    shift_y: float = 0.0,
) -> tuple[float, float, float, float]:
    """Return ``(fx, fy, cx, cy)`` in pixels of the rendered ``width x height`` image.

    ``width``/``height`` are the final pixel sizes (resolution times percentage).
    """
    if lens_mm <= 0 or width <= 0 or height <= 0:
        raise ValueError("lens and resolution must be positive")
    fit = sensor_fit_axis(sensor_fit, pixel_aspect_x * width, pixel_aspect_y * height)
    sensor = sensor_height_mm if sensor_fit == "VERTICAL" else sensor_width_mm
    ratio = pixel_aspect_y / pixel_aspect_x
    view_px = width if fit == "HORIZONTAL" else ratio * height
    fx = lens_mm / sensor * view_px
    fy = fx / ratio
    cx = width / 2.0 - shift_x * view_px
    cy = height / 2.0 + shift_y * view_px / ratio
    return fx, fy, cx, cy


def rigid_inverse(matrix_world: Sequence[Sequence[float]]) -> list[list[float]]:
    """World-to-camera matrix from a camera's 4x4 world matrix, ignoring any scale on the camera object."""
    cols = [[matrix_world[r][c] for r in range(3)] for c in range(3)]
    norms = [math.sqrt(sum(v * v for v in col)) or 1.0 for col in cols]
    rot = [[cols[c][r] / norms[c] for c in range(3)] for r in range(3)]  # rot[r][c]
    t = [matrix_world[r][3] for r in range(3)]
    inv = [[rot[c][r] for c in range(3)] for r in range(3)]  # transpose
    tinv = [-sum(inv[r][k] * t[k] for k in range(3)) for r in range(3)]
    return [inv[0] + [tinv[0]], inv[1] + [tinv[1]], inv[2] + [tinv[2]], [0.0, 0.0, 0.0, 1.0]]


def transform(m: Sequence[Sequence[float]], p: Sequence[float]) -> tuple[float, float, float]:
    return (
        m[0][0] * p[0] + m[0][1] * p[1] + m[0][2] * p[2] + m[0][3],
        m[1][0] * p[0] + m[1][1] * p[1] + m[1][2] * p[2] + m[1][3],
        m[2][0] * p[0] + m[2][1] * p[1] + m[2][2] * p[2] + m[2][3],
    )


def project(world_to_camera, fx, fy, cx, cy, p) -> tuple[float, float, float]:
    """Project a world point to image pixels ``(u, v, depth)`` (y down; depth = planar distance along -Z)."""
    x, y, z = transform(world_to_camera, p)
    depth = -z
    return cx + fx * x / depth, cy - fy * y / depth, depth


def depth_range(camera_space_depths: Iterable[float], clip_start: float, clip_end: float) -> tuple[float, float]:
    """Shot-wide ``(near, far)`` from planar depths of geometry seen over all frames, clamped to the clip range.

    Falls back to the clip range when nothing lies in front of the camera.
    """
    lo, hi = math.inf, -math.inf
    for d in camera_space_depths:
        if d > 0 and math.isfinite(d):
            lo = min(lo, d)
            hi = max(hi, d)
    if not math.isfinite(lo):
        return float(clip_start), float(clip_end)
    near = min(max(lo, clip_start), clip_end)
    far = min(max(hi, clip_start), clip_end)
    if far <= near:
        far = min(clip_end, near * 1.001 + 1e-6)
        if far <= near:
            near = max(0.0, far - 1e-6)
    return float(near), float(far)


def _halfspaces_box(local_to_camera, bbox_min, bbox_max):
    """The 6 half-spaces ``a . p <= b`` (camera space) of an object's local bounding box; None if singular."""
    import numpy as np

    m = np.asarray(local_to_camera, dtype=np.float64)
    a3 = m[:3, :3]
    if abs(np.linalg.det(a3)) < 1e-12:
        return None
    inv = np.linalg.inv(m)  # camera -> local: q = inv[:3,:3] p + inv[:3,3]
    rows, rhs = [], []
    for i in range(3):
        r, t = inv[i, :3], inv[i, 3]
        rows += [r, -r]
        rhs += [bbox_max[i] - t, -(bbox_min[i] - t)]
    return np.array(rows), np.array(rhs)


def _halfspaces_frustum(fx, fy, cx, cy, width, height, near, far):
    """Half-spaces of the pinhole view frustum in camera space (looking down -Z, image y down)."""
    import numpy as np

    rows = [
        (-fx, 0.0, cx),            # u >= 0
        (fx, 0.0, width - cx),     # u <= width
        (0.0, fy, cy),             # v >= 0
        (0.0, -fy, height - cy),   # v <= height
        (0.0, 0.0, 1.0),           # depth >= near  (z <= -near)
        (0.0, 0.0, -1.0),          # depth <= far   (-z <= far)
    ]
    return np.array(rows, dtype=np.float64), np.array([0.0, 0.0, 0.0, 0.0, -near, far])


def visible_box_depths(local_to_camera, bbox_min, bbox_max, intr, width, height, near, far):
    """``(min, max)`` planar depth of the part of an object's bounding box inside the view frustum, or None.

    Both are convex polyhedra, so the extremes of the (linear) depth over their intersection lie on its vertices:
    every vertex is the solution of 3 of the 12 bounding planes that satisfies all others (vertex enumeration of
    a 3-variable linear program). Objects outside the view contribute nothing, large ones (floors) only the part
    the camera sees.
    """
    import itertools

    import numpy as np

    box = _halfspaces_box(local_to_camera, bbox_min, bbox_max)
    if box is None:
        return None
    fa, fb = _halfspaces_frustum(*intr, width, height, near, far)
    a = np.vstack([box[0], fa])
    b = np.concatenate([box[1], fb])
    a_n = a / np.linalg.norm(a, axis=1, keepdims=True)
    b_n = b / np.linalg.norm(a, axis=1)
    triples = np.array(list(itertools.combinations(range(len(a)), 3)))
    mats = a_n[triples]
    dets = np.linalg.det(mats)
    ok = np.abs(dets) > 1e-9
    if not ok.any():
        return None
    pts = np.linalg.solve(mats[ok], b_n[triples[ok]][..., None])[..., 0]
    scale = max(1.0, float(np.abs(b_n).max()))
    feasible = np.all(pts @ a_n.T <= b_n + 1e-7 * scale, axis=1)
    if not feasible.any():
        return None
    depth = -pts[feasible, 2]
    return float(depth.min()), float(depth.max())

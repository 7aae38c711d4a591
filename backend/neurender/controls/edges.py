"""Soft edge map (white lines on black, like SoftEdge/HED or lineart controls) from exact geometry.

No image edge detector is run on the shaded render: shading, textures and noise would make lines appear and vanish
from frame to frame. Lines come only from geometry, so they move exactly with the objects:

* depth discontinuities (silhouettes, occlusion boundaries). Inverse depth is affine in image coordinates across a
  plane, so a slanted floor has a constant inverse-depth slope and no false edges; a neighbour pair is an edge when its
  inverse-depth step exceeds the slope on either side by a relative ``depth_jump`` (background has inverse depth 0,
  so object/background boundaries come out naturally);
* normal creases: the angle between neighbouring normals above ``crease_deg``;
* object-index boundaries: two different objects touching (even at equal depth).

Each line is drawn one pixel wide, on the nearer pixel of the pair (the occluding side, as a line drawing would),
then softened with a small Gaussian whose peak on a straight line is rescaled to 1.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy.ndimage import gaussian_filter, gaussian_filter1d


def _ramp(x: np.ndarray, start: float) -> np.ndarray:
    """0 below ``start``, rising linearly to 1 at ``2 * start``."""
    return np.clip((x - start) / start, 0.0, 1.0)


def _pairs(a: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(value at p, value at q = p + 1) along ``axis`` for every neighbour pair."""
    n = a.shape[axis]
    return np.take(a, np.arange(n - 1), axis=axis), np.take(a, np.arange(1, n), axis=axis)


def _depth_pairs(inv: np.ndarray, axis: int, depth_jump: float) -> tuple[np.ndarray, np.ndarray]:
    """Edge strength of each pair along ``axis`` from inverse depth; returns (strength, q_is_nearer)."""
    p, q = _pairs(inv, axis)
    step = np.abs(q - p)
    # the slope just outside the pair on each side (p-1 -> p and q -> q+1); 0 at the image border
    slopes = np.abs(np.diff(inv, axis=axis))
    pad = [(0, 0)] * inv.ndim
    pad[axis] = (1, 1)
    slopes = np.pad(slopes, pad, constant_values=np.inf)
    n = inv.shape[axis]
    before = np.take(slopes, np.arange(0, n - 1), axis=axis)  # slope (p-1, p)
    after = np.take(slopes, np.arange(2, n + 1), axis=axis)  # slope (q, q+1)
    expected = np.minimum(before, after)
    expected = np.where(np.isfinite(expected), expected, 0.0)
    scale = np.maximum(np.maximum(p, q), 1e-12)
    excess = np.maximum(step - expected, 0.0) / scale
    strength = np.where(np.maximum(p, q) > 0, _ramp(excess, depth_jump), 0.0)
    return strength, q > p


def _scatter(out: np.ndarray, strength: np.ndarray, on_q: np.ndarray, axis: int) -> None:
    """Draw each pair's strength onto p or q (``on_q``) with max-blending."""
    n = out.shape[axis]
    sl_p = [slice(None)] * out.ndim
    sl_q = [slice(None)] * out.ndim
    sl_p[axis] = slice(0, n - 1)
    sl_q[axis] = slice(1, n)
    tp, tq = tuple(sl_p), tuple(sl_q)
    out[tp] = np.maximum(out[tp], np.where(on_q, 0.0, strength))
    out[tq] = np.maximum(out[tq], np.where(on_q, strength, 0.0))


def geometric_edges(
    depth: np.ndarray,
    normal_cam_or_world: Optional[np.ndarray] = None,
    object_index: Optional[np.ndarray] = None,
    *,
    depth_jump: float = 0.05,
    crease_deg: float = 30.0,
    sigma: float = 0.7,
) -> np.ndarray:
    """HxW float32 0..1 soft edge map from depth (+inf = background), optional normals (any one space) and index."""
    z = np.asarray(depth, dtype=np.float64)
    with np.errstate(divide="ignore"):
        inv = np.where(np.isfinite(z) & (z > 0), 1.0 / z, 0.0)
    unit = None
    valid = inv > 0
    if normal_cam_or_world is not None:
        n = np.asarray(normal_cam_or_world, dtype=np.float64)
        length = np.linalg.norm(n, axis=-1, keepdims=True)
        unit = np.where(length > 1e-8, n / np.maximum(length, 1e-8), 0.0)
        valid &= length[..., 0] > 1e-8
    idx = None if object_index is None else np.asarray(object_index)

    lines = np.zeros(z.shape, np.float64)
    cos_crease = np.cos(np.radians(crease_deg))
    for axis in (0, 1):
        if z.shape[axis] < 2:
            continue
        strength, q_nearer = _depth_pairs(inv, axis, depth_jump)
        _scatter(lines, strength, q_nearer, axis)
        ip, iq = _pairs(inv, axis)
        if unit is not None:
            np_, nq = _pairs(unit, axis)
            vp, vq = _pairs(valid, axis)
            cos = np.clip(np.sum(np_ * nq, axis=-1), -1.0, 1.0)
            angle = np.degrees(np.arccos(cos))
            crease = np.where(vp & vq & (cos < cos_crease), _ramp(angle, crease_deg), 0.0)
            _scatter(lines, crease, iq > ip, axis)
        if idx is not None:
            a, b = _pairs(idx, axis)
            touching = (a != b) & ((ip > 0) | (iq > 0))
            _scatter(lines, touching.astype(np.float64), iq > ip, axis)

    if sigma > 0:
        delta = np.zeros(int(8 * sigma) * 2 + 1)
        delta[len(delta) // 2] = 1.0
        peak = gaussian_filter1d(delta, sigma)[len(delta) // 2]  # peak of a blurred 1-px straight line
        lines = gaussian_filter(lines, sigma, mode="nearest") / peak
    return np.clip(lines, 0.0, 1.0).astype(np.float32)

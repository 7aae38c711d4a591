"""Depth control image from the exact depth pass.

ControlNet depth models (lllyasviel ``control_v11f1p_sd15_depth``, ``sd-controlnet-depth``) were trained on MiDaS
output: relative *inverse* depth (disparity) min-max normalised per image, near = white, far = black. We produce the
same signal from exact planar depth, but with one (near, far) range for the whole shot, so a static surface keeps
exactly the same grey in every frame (DiffSynth, arXiv 2308.03463, instead mean-shifts estimated depth per frame).

    control = clip((1/z - 1/far) / (1/near - 1/far), 0, 1),    background -> 0
"""

from __future__ import annotations

import logging
import math

import numpy as np

from neurender.errors import PassFolderError
from neurender.passes.folder import PassFolder

log = logging.getLogger(__name__)


def foreground_range(depth: np.ndarray) -> tuple[float, float] | None:
    """(min, max) of the finite depth of one frame, or None if the frame shows only background."""
    finite = depth[np.isfinite(depth)]
    if finite.size == 0:
        return None
    return float(finite.min()), float(finite.max())


def frame_depth_ranges(folder: PassFolder) -> list[tuple[float, float] | None]:
    """``foreground_range`` of every selected frame, in order: the folder's pixel pre-pass
    (``PassFolder.foreground_ranges``, one read of each frame, shared with the validation before any model loads)."""
    return folder.foreground_ranges()


def shot_depth_range(folder: PassFolder, ranges: list[tuple[float, float] | None] | None = None) -> tuple[float, float]:
    """The shot-wide (near, far): ``manifest.depth_range`` if given, else min/max of finite depth over all frames.

    The pre-pass reads every selected frame once, unless the per-frame ``ranges`` (``frame_depth_ranges``) are
    given. A range with near == far (a single flat depth) is widened a little so the normalisation stays defined.
    """
    manifest = folder.manifest
    if manifest.depth_range is not None:
        near, far = manifest.depth_range
        if near <= 0:
            near = manifest.clip_start
        return _widen(near, far)
    lo, hi = math.inf, -math.inf
    for r in frame_depth_ranges(folder) if ranges is None else ranges:
        if r is not None:
            lo, hi = min(lo, r[0]), max(hi, r[1])
    if not math.isfinite(lo):
        raise PassFolderError(
            f"the pass folder {folder.path} shows no geometry in frames {folder.frames[0]}-{folder.frames[-1]} "
            "(depth is background everywhere)"
        )
    log.debug("shot depth range from a pre-pass over %d frames: %.4g..%.4g", len(folder.frames), lo, hi)
    return _widen(lo, hi)


def _widen(near: float, far: float) -> tuple[float, float]:
    if far <= near * (1.0 + 1e-6):
        far = near * 1.01 + 1e-6
    return float(near), float(far)


def depth_to_control(depth: np.ndarray, near: float, far: float) -> np.ndarray:
    """HxW float32 in 0..1: normalised inverse depth, near = 1 (white), far and background (+inf) = 0."""
    if not (0 < near < far and math.isfinite(far)):
        raise ValueError(f"depth range must satisfy 0 < near < far < inf, got ({near}, {far})")
    z = np.asarray(depth, dtype=np.float64)
    with np.errstate(divide="ignore"):
        inv = 1.0 / z  # +inf -> 0
    lo, hi = 1.0 / far, 1.0 / near
    out = np.clip((inv - lo) / (hi - lo), 0.0, 1.0)
    out[~np.isfinite(z)] = 0.0
    return out.astype(np.float32)

"""Temporal smoothing of the per-frame depth range (Savitzky-Golay).

Savitzky & Golay (1964), "Smoothing and Differentiation of Data by Simplified Least Squares Procedures": each sample
is replaced by the value at its position of a least-squares polynomial of degree ``order`` fitted over a window of
``window`` samples. Polynomials up to ``order`` pass through unchanged (a linear ramp stays a ramp), jitter is
averaged out. DiffSynth (arXiv 2308.03463) smooths keypoint tracks this way with window 7, order 2.

With exact depth, one fixed shot-wide range (window 0, the default) is the flicker-free choice; a smoothed per-frame
range keeps more contrast in shots whose depth changes a lot (a dolly from a wide shot to a close-up) while still
avoiding frame-to-frame pumping.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.signal import savgol_filter

from neurender.controls.depth import frame_depth_ranges, shot_depth_range
from neurender.passes.folder import PassFolder

log = logging.getLogger(__name__)


def savgol_smooth(values: np.ndarray, window: int, order: int = 2) -> np.ndarray:
    """Savitzky-Golay smoothing along axis 0 (time).

    The edges use the polynomial fitted to the first/last full window (scipy's ``mode="interp"``), so a polynomial of
    degree <= ``order`` is reproduced exactly everywhere. A window longer than the series is shrunk to the longest odd
    length that fits; if that leaves no more samples than ``order``, the series is returned unchanged.
    """
    v = np.asarray(values, dtype=np.float64)
    if window < 0 or (window and window % 2 == 0):
        raise ValueError(f"Savitzky-Golay window must be 0 or odd, got {window}")
    if order < 0:
        raise ValueError(f"Savitzky-Golay order must be >= 0, got {order}")
    n = v.shape[0]
    w = min(window, n if n % 2 else n - 1)
    if w <= order:
        return v.copy()
    return savgol_filter(v, w, order, axis=0, mode="interp")


def per_frame_depth_ranges(folder: PassFolder, window: int, order: int = 2) -> dict[int, tuple[float, float]]:
    """(near, far) per selected frame.

    ``window`` 0 gives the one shot-wide range (``shot_depth_range``) for every frame. Otherwise each frame's own
    min/max of finite depth is smoothed over time with ``savgol_smooth(window, order)``; frames that show only
    background borrow the shot-wide range before smoothing.
    """
    if window == 0:
        shot = shot_depth_range(folder)
        return {f: shot for f in folder.frames}
    ranges = frame_depth_ranges(folder)  # read every frame once, for both the shot range and the series
    shot = shot_depth_range(folder, ranges)
    raw = [r if r is not None else shot for r in ranges]
    series = np.asarray(raw, dtype=np.float64)
    smooth = savgol_smooth(series, window, order)
    floor = 0.5 * float(series[:, 0].min())  # a wild overshoot must never make near <= 0
    out = {}
    for f, (near, far) in zip(folder.frames, smooth):
        near = float(max(near, floor))
        far = float(max(far, near * 1.01 + 1e-6))
        out[f] = (near, far)
    return out

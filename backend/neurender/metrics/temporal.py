"""Temporal-consistency metrics along motion.

* Warp error (Lai et al. 2018, "Learning blind video temporal consistency", Eq. 8):
  ``E = mean_t  sum_p M_t(p) ||O_t(p) - W(O_{t+1})(p)||^2 / sum_p M_t(p)``, where ``W`` warps frame t+1 onto frame
  t along the flow t -> t+1 and ``M_t`` is the non-occlusion mask; ``||.||^2`` sums the RGB channels (0..1 values).
  Lower is better; 0 for a sequence that only moves along the flow.
* Warp L1 (the same warp and mask, L1 on a 0..255 scale): ``mean_t  sum_p M_t(p) mean_c |O_t - W(O_{t+1})| * 255 /
  sum_p M_t(p)``; less dominated by a few outliers than the squared form, and in the units deflicker reports use.
* Pixel-MSE (Pix2Video, Ceylan et al. 2023): mean squared difference (over pixels and channels) between frame t and
  frame t+1 warped onto it, over every pixel whose match lies inside the image (no occlusion mask).
* Brightness flicker: the standard deviation over frames of the per-frame mean luma (Rec. 709 weights), after
  subtracting the reference sequence's per-frame mean luma (so real lighting changes do not count); without a
  reference, after subtracting a centred 5-frame moving average of the sequence itself.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from neurender.errors import InputError
from neurender.metrics.motion import PairMotion, inside_mask, warp_to_previous

LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float64)


def _check(frames: Sequence[np.ndarray], motion: Sequence[PairMotion]) -> None:
    if len(motion) != max(0, len(frames) - 1):
        raise InputError(f"{len(frames)} frames need {max(0, len(frames) - 1)} motion pairs, got {len(motion)}")


def warp_errors(frames: Sequence[np.ndarray], motion: Sequence[PairMotion]) -> np.ndarray:
    """Per pair t -> t+1 warp error (Lai et al. 2018); NaN for a pair with no visible pixel."""
    _check(frames, motion)
    out = np.full(len(motion), np.nan)
    for t, m in enumerate(motion):
        warped = warp_to_previous(frames[t + 1], m.flow)
        sq = np.square(np.asarray(frames[t], dtype=np.float64) - warped).sum(-1)
        if m.mask.any():
            out[t] = float(sq[m.mask].mean())
    return out


def warp_l1(frames: Sequence[np.ndarray], motion: Sequence[PairMotion]) -> np.ndarray:
    """Per pair t -> t+1 mean absolute difference (0..255 scale) between frame t and frame t+1 warped onto it,
    over the visible pixels; NaN for a pair with no visible pixel."""
    _check(frames, motion)
    out = np.full(len(motion), np.nan)
    for t, m in enumerate(motion):
        warped = warp_to_previous(frames[t + 1], m.flow)
        diff = np.abs(np.asarray(frames[t], dtype=np.float64) - warped)
        diff = diff.mean(-1) if diff.ndim == 3 else diff
        if m.mask.any():
            out[t] = float(diff[m.mask].mean() * 255.0)
    return out


def pixel_mse(frames: Sequence[np.ndarray], motion: Sequence[PairMotion]) -> np.ndarray:
    """Per pair MSE between frame t and frame t+1 warped onto it (inside-image pixels, no occlusion mask)."""
    _check(frames, motion)
    out = np.full(len(motion), np.nan)
    for t, m in enumerate(motion):
        inside = inside_mask(m.flow)
        warped = warp_to_previous(frames[t + 1], m.flow)
        sq = np.square(np.asarray(frames[t], dtype=np.float64) - warped)
        if inside.any():
            out[t] = float(sq[inside].mean())
    return out


def mean_luma(frames: Sequence[np.ndarray]) -> np.ndarray:
    """Per-frame mean Rec. 709 luma of (H, W, 3) frames (grey frames: their mean)."""
    out = []
    for f in frames:
        a = np.asarray(f, dtype=np.float64)
        out.append(float((a[..., :3] @ LUMA).mean()) if a.ndim == 3 and a.shape[-1] >= 3 else float(a.mean()))
    return np.array(out)


def brightness_flicker(frames: Sequence[np.ndarray], reference: Optional[Sequence[np.ndarray]] = None) -> float:
    """Std over frames of the per-frame mean luma minus the reference's (or minus a 5-frame moving average)."""
    m = mean_luma(frames)
    if len(m) < 2:
        return 0.0
    if reference is not None:
        if len(reference) != len(frames):
            raise InputError(f"reference has {len(reference)} frames, the sequence {len(frames)}")
        residual = m - mean_luma(reference)
    else:
        half = 2
        smooth = np.array([m[max(0, t - half): t + half + 1].mean() for t in range(len(m))])
        residual = m - smooth
    return float(np.std(residual))

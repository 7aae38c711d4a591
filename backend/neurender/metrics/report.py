"""All metrics of one frame sequence at once, as a JSON-ready dict (what ``neurender metrics`` prints)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from neurender.errors import InputError
from neurender.metrics import fidelity, temporal
from neurender.metrics.motion import PairMotion, dis_motion, exact_motion

log = logging.getLogger(__name__)


@dataclass
class FrameSequence:
    numbers: list[int]
    frames: list[np.ndarray]


def load_sequence(folder: Path) -> FrameSequence:
    """PNG/EXR frames of ``folder`` by frame number (``neurender.deflicker.sequence_io`` naming rules)."""
    from neurender.deflicker.sequence_io import list_sequence, read_image

    items = list_sequence(Path(folder))
    frames = [read_image(i.path).rgb for i in items]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise InputError(f"frames in {folder} differ in size: {sorted(shapes)[:3]}")
    return FrameSequence([i.number for i in items], frames)


def _finite(x: float) -> Optional[float]:
    return float(x) if math.isfinite(x) else None


def _mean(values: Sequence[float]) -> Optional[float]:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else None


def evaluate(
    frames: Sequence[np.ndarray],
    *,
    reference: Optional[Sequence[np.ndarray]] = None,
    motion: Optional[Sequence[PairMotion]] = None,
    guide: Optional[Sequence[np.ndarray]] = None,
) -> dict[str, Any]:
    """Metrics of ``frames``; ``motion`` (t -> t+1 pairs) defaults to DIS flow on ``guide``, else ``reference``,
    else the frames themselves. ``reference`` adds PSNR, SSIM and sharpness ratios."""
    frames = list(frames)
    if not frames:
        raise InputError("no frames to evaluate")
    source = "given"
    if motion is None:
        flow_guide = guide if guide is not None else (reference if reference is not None else frames)
        source = "dis:" + ("guide" if guide is not None else "reference" if reference is not None else "frames")
        motion = dis_motion(list(flow_guide))
    we = temporal.warp_errors(frames, motion)
    pm = temporal.pixel_mse(frames, motion)
    out: dict[str, Any] = {
        "frames": len(frames),
        "motion": source,
        "warp_error": _mean(we),
        "warp_error_per_pair": [_finite(v) for v in we],
        "pixel_mse": _mean(pm),
        "visible_fraction": _mean([float(m.mask.mean()) for m in motion]),
        "brightness_flicker": temporal.brightness_flicker(frames, reference),
        "sharpness_gradient": _mean([fidelity.gradient_sharpness(f) for f in frames]),
        "sharpness_laplacian": _mean([fidelity.laplacian_variance(f) for f in frames]),
    }
    if reference is not None:
        reference = list(reference)
        if len(reference) != len(frames):
            raise InputError(f"the reference has {len(reference)} frames but the sequence has {len(frames)}")
        psnrs = [fidelity.psnr(f, r) for f, r in zip(frames, reference)]
        out["psnr"] = _mean(psnrs)
        out["psnr_per_frame"] = psnrs
        out["ssim"] = _mean([fidelity.ssim(f, r) for f, r in zip(frames, reference)])
        g_ref = [fidelity.gradient_sharpness(r) for r in reference]
        l_ref = [fidelity.laplacian_variance(r) for r in reference]
        out["sharpness_ratio_gradient"] = _mean(
            [fidelity.gradient_sharpness(f) / g for f, g in zip(frames, g_ref) if g > 0])
        out["sharpness_ratio_laplacian"] = _mean(
            [fidelity.laplacian_variance(f) / v for f, v in zip(frames, l_ref) if v > 0])
        out["reference_warp_error"] = _mean(temporal.warp_errors(reference, motion))
    return out


def evaluate_folders(
    frames_dir: Path,
    *,
    passes: Optional[Path] = None,
    reference: Optional[Path] = None,
    guide: Optional[Path] = None,
) -> dict[str, Any]:
    """``evaluate`` on folders: motion exact from ``passes`` (frame numbers matched) or DIS on guide/reference."""
    seq = load_sequence(frames_dir)
    h, w = seq.frames[0].shape[:2]

    def matched(folder: Path, what: str) -> list[np.ndarray]:
        other = load_sequence(folder)
        by_number = dict(zip(other.numbers, other.frames))
        missing = [n for n in seq.numbers if n not in by_number]
        if missing:
            raise InputError(f"{what} folder {folder} lacks frames {missing[:5]} that {frames_dir} has")
        out = [by_number[n] for n in seq.numbers]
        if out[0].shape != seq.frames[0].shape:
            raise InputError(f"{what} frames in {folder} are {out[0].shape[1]}x{out[0].shape[0]}, the frames {w}x{h}")
        return out

    ref = matched(reference, "reference") if reference is not None else None
    gd = matched(guide, "guide") if guide is not None else None
    motion = exact_motion(passes, seq.numbers, h, w) if passes is not None else None
    result = evaluate(seq.frames, reference=ref, motion=motion, guide=gd)
    if passes is not None:
        result["motion"] = "exact:vector-pass"
    result["frame_numbers"] = seq.numbers
    result["frames_dir"] = str(frames_dir)
    return result

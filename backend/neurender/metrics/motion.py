"""The motion temporal metrics follow: flow t -> t+1 with an occlusion mask, per consecutive frame pair.

Sources, best first:

* exact motion from a pass folder's Vector pass, via the deflicker package's ``MotionSource`` (visibility from the
  depth test, forward/backward consistency and object index; see ``neurender.deflicker.motion``);
* OpenCV DIS optical flow (Kroeger et al. 2016, "Fast optical flow using dense inverse search") computed on a guide
  sequence (the input/reference video, as warp-error papers do with RAFT/FlowNet), with the occlusion mask from the
  forward/backward consistency check of Sundaram et al. 2010 (as in Lai et al. 2018 and Ruder et al. 2016):
  ``|f(p) + b(p + f(p))|^2 <= 0.01 (|f|^2 + |b(p + f(p))|^2) + 0.5`` and ``p + f(p)`` inside the image.

Flows are (H, W, 2) float32 pixel offsets in image coordinates (x right, y down): frame t's pixel p is frame t+1's
``p + flow[p]``. Masks are (H, W) bool, True where the pixel is visible in both frames.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from neurender.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class PairMotion:
    """Motion from frame t to frame t+1 of a sequence."""

    flow: np.ndarray  # (H, W, 2) float32
    mask: np.ndarray  # (H, W) bool


def warp_to_previous(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Frame t+1 ``image`` (H, W, C) sampled at ``p + flow[p]``: its content on frame t's grid (bilinear, border)."""
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    out = cv2.remap(
        np.ascontiguousarray(image, dtype=np.float32), xs + flow[..., 0], ys + flow[..., 1],
        interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE,
    )
    return out.reshape(image.shape)


def inside_mask(flow: np.ndarray) -> np.ndarray:
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    x, y = xs + flow[..., 0], ys + flow[..., 1]
    return (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)


def consistency_mask(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Occlusion mask from forward/backward consistency (Sundaram et al. 2010), inside-image test included."""
    b_at = warp_to_previous(backward, forward)
    err = np.square(forward + b_at).sum(-1)
    bound = 0.01 * (np.square(forward).sum(-1) + np.square(b_at).sum(-1)) + 0.5
    return (err <= bound) & inside_mask(forward)


def _gray_u8(image: np.ndarray) -> np.ndarray:
    rgb = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    gray = rgb if rgb.ndim == 2 else rgb[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.ascontiguousarray((gray * 255).round().astype(np.uint8))


def dis_motion(guide: Sequence[np.ndarray]) -> list[PairMotion]:
    """DIS optical flow (medium preset) between consecutive guide frames, both ways, with consistency masks."""
    if len(guide) < 2:
        return []
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)  # one instance per resolution
    grays = [_gray_u8(g) for g in guide]
    out = []
    for a, b in zip(grays[:-1], grays[1:]):
        fwd = dis.calc(a, b, None)
        bwd = dis.calc(b, a, None)
        out.append(PairMotion(fwd.astype(np.float32), consistency_mask(fwd, bwd)))
    return out


def exact_motion(pass_dir: Path, frames: Sequence[int], height: int, width: int) -> list[PairMotion]:
    """Exact motion between consecutive ``frames`` (Blender frame numbers) from a pass folder, at height x width."""
    from neurender.deflicker.motion import MotionSource
    from neurender.passes.folder import PassFolder

    frames = list(frames)
    folder = PassFolder.open(pass_dir, frames=(min(frames), max(frames)))
    missing = sorted(set(frames) - set(folder.frames))
    if missing:
        raise InputError(f"frames {missing[:5]} have no passes in {pass_dir} (it holds {folder.frames[0]}-{folder.frames[-1]})")
    if not folder.has_pass("vector"):
        raise InputError(f"pass folder {pass_dir} has no vector pass; exact-motion metrics need one (or omit --passes)")
    source = MotionSource.from_folder(folder, frames=frames, height=height, width=width)
    out = []
    for k in range(len(frames) - 1):
        c = source.correspondence(k, k + 1, "exact").resized(height, width)
        out.append(PairMotion(c.flow.numpy().astype(np.float32), c.mask.numpy()))
    return out

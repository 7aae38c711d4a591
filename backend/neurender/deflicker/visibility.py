"""Which pixels of frame i are visible in frame j under a flow i->j: occlusion, disocclusion and object tests.

Three independent tests, combined with a logical AND (each can only remove pixels):

* inside: ``p + flow`` lies within the image (bilinear data exists);
* forward/backward consistency (Sundaram, Brox & Keutzer 2010, "Dense point trajectories by GPU-accelerated large
  displacement optical flow", eq. 5, with exact flows a tight threshold): ``|flow_ij(p) + flow_ji(p + flow_ij(p))|``
  must be small; a pixel of i hidden in j lands on another surface whose backward flow points elsewhere;
* depth test (shadow-mapping style): the depth the point must have in frame j (known exactly for reprojection;
  approximated by its depth in frame i for the Vector pass) must match frame j's depth at ``p + flow`` within a
  relative tolerance; an occluder in front fails it;
* object index: every bilinear tap at ``p + flow`` must carry the object index of p, so colours never bleed between
  objects (checked with the mean and variance of the sampled index: both match only if all weighted taps agree).

``footprint_pure`` answers the same question for bicubic sampling (4x4 taps): where the min/max-pooled index of frame
j around ``p + flow`` equals p's index, bicubic sampling cannot mix objects; elsewhere the blend samples bilinearly.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from neurender.deflicker.warp import backward_warp, inside_mask

FB_TOLERANCE_PX = 0.5
FB_TOLERANCE_REL = 0.02
DEPTH_TOLERANCE_VECTOR = 0.1
"""Relative depth change allowed between adjacent frames along the Vector pass (motion towards the camera)."""
DEPTH_TOLERANCE_REPROJECT = 0.02
_BIG = 1e10


def _finite(depth: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(depth.float(), nan=_BIG, posinf=_BIG, neginf=_BIG).clamp(max=_BIG)


def visibility(
    flow_ij: torch.Tensor,
    *,
    depth_i: Optional[torch.Tensor] = None,
    depth_j: Optional[torch.Tensor] = None,
    expected_depth: Optional[torch.Tensor] = None,
    depth_tolerance: float = DEPTH_TOLERANCE_VECTOR,
    flow_ji: Optional[torch.Tensor] = None,
    index_i: Optional[torch.Tensor] = None,
    index_j: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """(H, W) float32 0/1: pixels of frame i whose surface point is visible in frame j under ``flow_ij``.

    ``expected_depth`` (depth of the point as seen from camera j) defaults to ``depth_i``; pass only what exists.
    """
    flow = flow_ij[None]
    valid = inside_mask(flow)[0] > 0
    if flow_ji is not None:
        back = backward_warp(flow_ji.permute(2, 0, 1)[None], flow)[0].permute(1, 2, 0)
        error = (flow_ij + back).norm(dim=-1)
        valid &= error <= FB_TOLERANCE_PX + FB_TOLERANCE_REL * flow_ij.norm(dim=-1)
    if depth_j is not None and (expected_depth is not None or depth_i is not None):
        want = _finite(expected_depth if expected_depth is not None else depth_i)
        have = backward_warp(_finite(depth_j)[None, None], flow, mode="nearest")[0, 0]
        background = (want >= _BIG) & (have >= _BIG)
        valid &= background | ((have - want).abs() <= depth_tolerance * want)
    if index_i is not None and index_j is not None:
        idx = index_j.to(torch.float64)
        stacked = torch.stack([idx, idx * idx])[None]
        taps = backward_warp(stacked, flow.to(torch.float64))[0]
        mean, var = taps[0], taps[1] - taps[0] ** 2
        valid &= ((mean - index_i.to(torch.float64)).abs() < 1e-6) & (var.abs() < 1e-6)
    return valid.float()


def footprint_pure(flow_ij: torch.Tensor, index_i: Optional[torch.Tensor], index_j: Optional[torch.Tensor],
                   size: int = 5) -> torch.Tensor:
    """(H, W) float32 0/1: 1 where every pixel of frame j within ``size`` x ``size`` of ``p + flow`` has p's object
    index (all ones without object indices)."""
    h, w = flow_ij.shape[:2]
    if index_i is None or index_j is None:
        return torch.ones(h, w)
    idx = index_j.to(torch.float64)[None, None]
    hi = F.max_pool2d(idx, size, stride=1, padding=size // 2)
    lo = -F.max_pool2d(-idx, size, stride=1, padding=size // 2)
    pooled = backward_warp(torch.cat([hi, lo], 1), flow_ij[None].to(torch.float64), mode="nearest")[0]
    want = index_i.to(torch.float64)
    return ((pooled[0] == want) & (pooled[1] == want)).float()

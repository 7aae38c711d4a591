"""Backward warping with bilinear sampling (``torch.nn.functional.grid_sample``).

``backward_warp(images_j, flow_ij)`` builds, on frame i's pixel grid, the image ``I_j(p + flow_ij(p))``: the standard
backward (inverse) warp used by flow-based video methods (e.g. Lai et al. 2018, "Learning Blind Video Temporal
Consistency", warping loss). Pixel centres sit at integer + 0.5; ``grid_sample`` with ``align_corners=False``
uses exactly that convention, so a zero flow reproduces the image (to float rounding, ~1e-6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EDGE_TOLERANCE = 0.01
"""A sample point may lie this many pixels beyond the outermost pixel centres and still count as inside."""


def sample_grid(flow: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 2) pixel offsets -> (N, H, W, 2) normalised ``grid_sample`` coordinates of ``p + flow``."""
    n, h, w, _ = flow.shape
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype) + 0.5
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype) + 0.5
    gx = (xs[None, None, :] + flow[..., 0]) * (2.0 / w) - 1.0
    gy = (ys[None, :, None] + flow[..., 1]) * (2.0 / h) - 1.0
    return torch.stack([gx, gy], dim=-1)


def inside_mask(flow: torch.Tensor) -> torch.Tensor:
    """(N, H, W) float: 1 where ``p + flow`` lies within the outermost pixel centres (bilinear data exists)."""
    n, h, w, _ = flow.shape
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype) + 0.5
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype) + 0.5
    x = xs[None, None, :] + flow[..., 0]
    y = ys[None, :, None] + flow[..., 1]
    lo, t = 0.5 - EDGE_TOLERANCE, EDGE_TOLERANCE
    return ((x >= lo) & (x <= w - 0.5 + t) & (y >= lo) & (y <= h - 0.5 + t)).to(flow.dtype)


def backward_warp(
    images: torch.Tensor, flow: torch.Tensor, *, mode: str = "bilinear", return_inside: bool = False
):
    """Warp (N, C, H, W) ``images`` (frames j) onto frame i's grid by (N, H, W, 2) ``flow`` i->j.

    Out-of-image samples repeat the border; ``return_inside=True`` also returns the (N, H, W) inside mask.
    ``mode="nearest"`` is for labels (object index, depth tests).
    """
    if flow.shape[0] != images.shape[0] and flow.shape[0] == 1:
        flow = flow.expand(images.shape[0], -1, -1, -1)
    grid = sample_grid(flow.to(images.dtype))
    out = F.grid_sample(images, grid, mode=mode, padding_mode="border", align_corners=False)
    if return_inside:
        return out, inside_mask(flow)
    return out

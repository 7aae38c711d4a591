"""Dense correspondences between two frames: a flow field plus where it can be trusted.

A ``Correspondence`` from frame i to frame j says, for every pixel p of frame i, where the same surface point lies
in frame j: ``p + flow[p]`` (image coordinates: x right, y down, pixel centres at integer + 0.5, offsets in pixels).
``valid`` is 1 where that point is visible in frame j (not occluded, inside the image, same object) and 0 elsewhere;
after area downsampling (latent resolution) it holds the visible fraction of each cell.

Two operations are defined here:

* ``compose(c_ij, c_jk)`` -> i->k by chaining: ``flow_ik(p) = flow_ij(p) + flow_jk(p + flow_ij(p))``, the usual
  flow concatenation (e.g. Brox & Malik 2010, long-range tracks by following flow);
* ``resized(h, w)`` -> the same motion on another pixel grid (render size, latent size = /8): flow vectors scale by
  the size ratio, the validity is area-averaged, so a latent cell is trusted only as far as its pixels are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from neurender.deflicker.warp import backward_warp, inside_mask

ArrayLike = Union[np.ndarray, torch.Tensor]


def _as_tensor(x: ArrayLike, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    return x.to(dtype)


@dataclass
class Correspondence:
    """``flow`` (H, W, 2) float32 pixel offsets i->j; ``valid`` (H, W) float32 in 0..1 (bool input accepted).

    ``sharp`` (optional, (H, W) 0/1): where a wide (bicubic) sampling footprint stays on one object; where it is 0 the
    blend samples bilinearly. None means "everywhere" (or "not computed").
    """

    flow: torch.Tensor
    valid: torch.Tensor
    sharp: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        self.flow = _as_tensor(self.flow, torch.float32)
        self.valid = _as_tensor(self.valid, torch.float32)
        if self.sharp is not None:
            self.sharp = _as_tensor(self.sharp, torch.float32)
        if self.flow.ndim != 3 or self.flow.shape[-1] != 2:
            raise ValueError(f"flow must be (H, W, 2), got {tuple(self.flow.shape)}")
        if self.valid.shape != self.flow.shape[:2]:
            raise ValueError(f"valid {tuple(self.valid.shape)} does not match flow {tuple(self.flow.shape)}")

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.flow.shape[0]), int(self.flow.shape[1])

    @property
    def mask(self) -> torch.Tensor:
        """(H, W) bool: trusted pixels (at least half visible)."""
        return self.valid >= 0.5

    @classmethod
    def identity(cls, height: int, width: int, device: torch.device | str = "cpu") -> "Correspondence":
        return cls(torch.zeros(height, width, 2, device=device), torch.ones(height, width, device=device))

    def resized(self, height: int, width: int) -> "Correspondence":
        """The same motion on a ``height`` x ``width`` grid covering the same image (flow scaled, validity area-averaged)."""
        h, w = self.shape
        if (h, w) == (height, width):
            return self
        sx, sy = width / w, height / h
        flow = self.flow.permute(2, 0, 1)[None]
        masks = [self.valid] + ([self.sharp] if self.sharp is not None else [])
        mask = torch.stack(masks)[None]
        if height <= h and width <= w:
            flow = F.interpolate(flow, size=(height, width), mode="area")
            mask = F.interpolate(mask, size=(height, width), mode="area")
        else:
            flow = F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=False)
            mask = F.interpolate(mask, size=(height, width), mode="nearest")
        flow = flow[0].permute(1, 2, 0) * torch.tensor([sx, sy], dtype=flow.dtype, device=flow.device)
        sharp = (mask[0, 1] > 0.999).float() if self.sharp is not None else None
        return Correspondence(flow.contiguous(), mask[0, 0], sharp)

    def to(self, device: torch.device | str) -> "Correspondence":
        sharp = self.sharp.to(device) if self.sharp is not None else None
        return Correspondence(self.flow.to(device), self.valid.to(device), sharp)


def compose(c_ij: Correspondence, c_jk: Correspondence) -> Correspondence:
    """Chain i->j and j->k into i->k (flow concatenation); a pixel stays valid only if both links are."""
    if c_ij.shape != c_jk.shape:
        raise ValueError(f"cannot chain correspondences of sizes {c_ij.shape} and {c_jk.shape}")
    parts = [c_jk.flow.permute(2, 0, 1), c_jk.valid[None]]
    sharp = c_ij.sharp is not None and c_jk.sharp is not None
    if sharp:
        parts.append(c_jk.sharp[None])  # type: ignore[index]
    sampled, inside = backward_warp(torch.cat(parts, dim=0)[None], c_ij.flow[None], return_inside=True)
    flow_jk_at = sampled[0, :2].permute(1, 2, 0)
    valid_jk_at = sampled[0, 2] * inside[0]
    # bilinear validity below 1 means a tap fell on an invalid pixel: keep it only if nearly fully valid
    flow = c_ij.flow + flow_jk_at
    valid = c_ij.valid * (valid_jk_at > 0.999).float() * inside_mask(flow[None])[0]
    sharp_ik = c_ij.sharp * (sampled[0, 3] > 0.999).float() if sharp else None  # type: ignore[operator]
    return Correspondence(flow, valid, sharp_ik)

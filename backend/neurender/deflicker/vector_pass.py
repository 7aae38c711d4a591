"""Exact adjacent-frame motion from Blender's Vector pass.

Blender stores, per pixel of frame t, in pixels with y up: ``XY = pix(t-1) - pix(t)`` and ``ZW = pix(t) - pix(t+1)``
(the "speed" pass of Cycles/EEVEE; see /work/shared/BLENDER_NOTES.md). In image coordinates (rows top-first, y down)
that gives the flow to the previous frame ``(V.x, -V.y)`` and to the next frame ``(-V.z, +V.w)``.
"""

from __future__ import annotations

import numpy as np
import torch


def _vector(vector: np.ndarray | torch.Tensor) -> torch.Tensor:
    v = torch.as_tensor(np.asarray(vector, dtype=np.float32)) if isinstance(vector, np.ndarray) else vector.float()
    if v.ndim != 3 or v.shape[-1] != 4:
        raise ValueError(f"a vector pass is (H, W, 4), got {tuple(v.shape)}")
    return torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)


def flow_to_previous(vector: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(H, W, 2) image-coordinate flow t -> t-1 from the (H, W, 4) vector pass of frame t."""
    v = _vector(vector)
    return torch.stack([v[..., 0], -v[..., 1]], dim=-1).contiguous()


def flow_to_next(vector: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(H, W, 2) image-coordinate flow t -> t+1 from the (H, W, 4) vector pass of frame t."""
    v = _vector(vector)
    return torch.stack([-v[..., 2], v[..., 3]], dim=-1).contiguous()

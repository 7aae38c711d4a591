"""Estimated motion for footage without passes: OpenCV's DIS optical flow between adjacent frames, both ways.

DIS (Kroeger et al. 2016, "Fast optical flow using dense inverse search", ECCV; ``cv2.DISOpticalFlow``, medium
preset) on the grey frames, each direction separately; a pixel is trusted where the two agree (forward/backward check
of Sundaram et al. 2010, ``|f(p) + b(p + f(p))| <= FB_TOLERANCE_PX + 5% |f|``) and the match lies inside the image.
Far pairs are chained from adjacent ones by ``MotionSource`` (``correspondence.compose``), as with the Vector pass.

Why not PatchMatch: on flickering frames (gain/offset/blotches change every frame) plain colour SSD locks onto
look-alike patches; DIS's patch normalisation and variational refinement follow the true motion (measured in
/work/shared/DEFLICKER_NOTES.md: 0.52 px median end-point error on adjacent flickering frames against 6.7 px).
"""

from __future__ import annotations

import numpy as np
import torch

from neurender.deflicker.correspondence import Correspondence
from neurender.deflicker.warp import backward_warp, inside_mask

FB_TOLERANCE_PX = 1.0
FB_TOLERANCE_REL = 0.05


def _grey_u8(image: torch.Tensor) -> np.ndarray:
    a = image.detach().float().cpu().numpy()
    if a.ndim == 3 and a.shape[-1] >= 3:
        a = a[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    elif a.ndim == 3:
        a = a[..., 0]
    hi = float(a.max()) if a.size else 1.0
    a = a / hi if hi > 1.0 else a  # HDR frames: their own range
    return np.ascontiguousarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8))


def _valid(fwd: torch.Tensor, bwd: torch.Tensor) -> torch.Tensor:
    back = backward_warp(bwd.permute(2, 0, 1)[None], fwd[None])[0].permute(1, 2, 0)
    err = (fwd + back).norm(dim=-1)
    ok = err <= FB_TOLERANCE_PX + FB_TOLERANCE_REL * fwd.norm(dim=-1)
    return (ok.float() * inside_mask(fwd[None])[0])


def dis_pair(guide_a: torch.Tensor, guide_b: torch.Tensor) -> tuple[Correspondence, Correspondence]:
    """(a -> b, b -> a) correspondences from DIS on (H, W[, C]) guide images."""
    import cv2

    ga, gb = _grey_u8(guide_a), _grey_u8(guide_b)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    fwd = torch.from_numpy(dis.calc(ga, gb, None).astype(np.float32))
    bwd = torch.from_numpy(dis.calc(gb, ga, None).astype(np.float32))
    return Correspondence(fwd, _valid(fwd, bwd)), Correspondence(bwd, _valid(bwd, fwd))

"""Correspondences of a static scene between any two frames from depth and cameras (pinhole reprojection).

For pixel centre (u, v) of frame i with planar view depth z (Blender's Depth pass: distance along the camera's -Z):
``X_cam = z (u - cx) / fx``, ``Y_cam = -z (v - cy) / fy``, ``Z_cam = -z`` (Blender camera: looks down -Z, +Y up,
image y down), ``X_world = inv(W2C_i) X_cam``; then into camera j: ``X'_cam = W2C_j X_world``,
``z' = -Z'_cam``, ``u' = fx' X'_cam / z' + cx'``, ``v' = -fy' Y'_cam / z' + cy'`` (Hartley & Zisserman, Multiple View
Geometry, eq. 6.8 with the OpenGL/Blender axis flip). The flow is ``(u' - u, v' - v)`` and ``z'`` is the depth the point
must have in frame j if it is visible there: the depth test in ``visibility.py`` compares it with frame j's depth.
Only points that do not move in the world are reprojected correctly; moving objects need the Vector pass.
"""

from __future__ import annotations

import numpy as np
import torch

from neurender.contract import FrameCamera


_FAR = 1e9
"""Distance at which background pixels are placed: far enough that camera translation no longer moves them."""


def _matrix(camera: FrameCamera) -> np.ndarray:
    return np.asarray(camera.world_to_camera, dtype=np.float64).reshape(4, 4)


def reproject(depth_i: torch.Tensor, camera_i: FrameCamera, camera_j: FrameCamera) -> tuple[torch.Tensor, torch.Tensor]:
    """Flow (H, W, 2) from frame i to frame j and the expected depth (H, W) in frame j.

    Background (non-finite depth) is reprojected as points at infinity (only the rotation moves them) with an expected
    depth of ``+inf``; points behind camera j get a zero flow and an expected depth of ``+inf``.
    """
    h, w = depth_i.shape
    z = depth_i.to(torch.float64)
    finite = torch.isfinite(z)
    z = torch.where(finite, z, torch.full_like(z, _FAR))
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                          indexing="ij")
    ci, cj = camera_i, camera_j
    cam = torch.stack([z * (u - ci.cx) / ci.fx, -z * (v - ci.cy) / ci.fy, -z, torch.ones_like(z)], dim=-1)
    relative = torch.from_numpy(_matrix(cj) @ np.linalg.inv(_matrix(ci)))
    cam_j = cam @ relative.T
    zj = -cam_j[..., 2]
    in_front = zj > 1e-9
    zs = torch.where(in_front, zj, torch.ones_like(zj))
    uj = cj.fx * cam_j[..., 0] / zs + cj.cx
    vj = -cj.fy * cam_j[..., 1] / zs + cj.cy
    flow = torch.stack([uj - u, vj - v], dim=-1)
    flow = torch.where(in_front[..., None], flow, torch.zeros_like(flow))
    expected = torch.where(in_front & finite, zj, torch.full_like(zj, float("inf")))
    return flow.float(), expected.float()

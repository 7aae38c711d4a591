"""Normal-map control image from Blender's world-space normal pass.

Convention (``convention="bae"``, the default) — ControlNet 1.1 ``control_v11p_sd15_normalbae``:
the model was trained on NormalBAE predictions (Bae et al., ICCV 2021, "Estimating and Exploiting the Aleatoric
Uncertainty in Surface Normal Estimation", ScanNet model), which the annotator stores as ``rgb = (n + 1) / 2``
(lllyasviel/ControlNet-v1-1-nightly, annotator/normalbae). The README asks for rendered normal maps that "follow
ScanNet's protocol". In terms of Blender's camera space (+X right, +Y up, +Z towards the viewer) that is

    R = (1 - x) / 2    red   = the surface faces LEFT
    G = (1 + y) / 2    green = the surface faces UP
    B = (1 + z) / 2    blue  = the surface faces the viewer

so a surface facing the camera is (0.5, 0.5, 1.0) (lavender), a floor seen level is (0.5, 1.0, 0.5). This is the mapping
dream-textures uses to feed Blender renders to normalbae (carson-katri/dream-textures,
engine/annotations/normal.py: view-space normal, ``(n + 1) / 2`` with red inverted, cleared to (0.5, 0.5, 1)), and the
one ControlNet 1.0's normal-from-MiDaS produced before its channel order (x from the Sobel gradient of inverse depth:
positive when the surface faces left; y positive when it faces up; a constant z) was reversed on disk.

``convention="midas"`` gives ControlNet 1.0 ``control_sd15_normal`` / ``lllyasviel/sd-controlnet-normal`` input, the
same three values in reversed channel order (R = z, G = y, B = left) — that model was trained on annotator output
written with OpenCV (BGR), as the channel flip in controlnet_aux's MiDaS normal and sd-webui-controlnet issue #71 show.

Empty space (no geometry) gets the flat "facing the viewer" colour both conventions use for background (the MiDaS
annotator zeroes x and y there, dream-textures clears to it): (0.5, 0.5, 1.0) for bae, (1.0, 0.5, 0.5) for midas.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

NORMAL_CONVENTIONS = ("bae", "midas")


def camera_space_normals(
    normal_world: np.ndarray, world_to_camera: Sequence[Sequence[float]] | np.ndarray
) -> np.ndarray:
    """HxWx3 unit normals in Blender camera space (+X right, +Y up, +Z towards the viewer).

    Normals transform with the inverse transpose of the view matrix's 3x3 part (equal to the rotation itself for a
    rigid camera; also right for a scaled camera object). Zero normals stay zero.
    """
    m = np.asarray(world_to_camera, dtype=np.float64)
    if m.shape != (4, 4):
        raise ValueError(f"world_to_camera must be 4x4, got shape {m.shape}")
    normal_matrix = np.linalg.inv(m[:3, :3]).T
    n = np.asarray(normal_world, dtype=np.float64) @ normal_matrix.T
    length = np.linalg.norm(n, axis=-1, keepdims=True)
    return np.where(length > 1e-8, n / np.maximum(length, 1e-8), 0.0)


def normals_to_control(
    normal_world: np.ndarray,
    world_to_camera: Sequence[Sequence[float]] | np.ndarray,
    background: Optional[np.ndarray] = None,
    convention: str = "bae",
) -> np.ndarray:
    """HxWx3 float32 0..1 normal-map control (see the module docstring for the colour convention).

    ``background`` (HxW bool, e.g. where depth is +inf) and pixels whose stored normal is zero get the flat colour.
    """
    if convention not in NORMAL_CONVENTIONS:
        raise ValueError(f"normal convention must be one of {', '.join(NORMAL_CONVENTIONS)}, not {convention!r}")
    n = camera_space_normals(normal_world, world_to_camera)
    empty = np.linalg.norm(n, axis=-1) < 0.5
    if background is not None:
        empty |= np.asarray(background, dtype=bool)
    left, up, toward = -n[..., 0], n[..., 1], n[..., 2]
    left[empty], up[empty], toward[empty] = 0.0, 0.0, 1.0
    channels = (left, up, toward) if convention == "bae" else (toward, up, left)
    out = (np.stack(channels, axis=-1) + 1.0) * 0.5
    return np.clip(out, 0.0, 1.0).astype(np.float32)

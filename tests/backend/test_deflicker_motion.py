"""Exact correspondences: warping, occlusion masks, chaining and depth+camera reprojection on scenes with known motion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neurender.contract import FrameCamera
from neurender.deflicker.correspondence import Correspondence, compose
from neurender.deflicker.motion import MotionSource, correspondences
from neurender.deflicker.warp import backward_warp
from neurender.errors import InputError
from neurender.passes.folder import FramePasses, PassFolder
from support.synthetic_passes import SyntheticScene

TOL = 1.0 / 255


def _smooth_image(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A smooth RGB texture (period >= 40 px) as a function of continuous image coordinates."""
    return np.stack([0.5 + 0.3 * np.sin(2 * math.pi * x / 40.0),
                     0.5 + 0.3 * np.cos(2 * math.pi * y / 48.0),
                     0.5 + 0.2 * np.sin(2 * math.pi * (x + 2 * y) / 90.0)], axis=0).astype(np.float32)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    return xs + 0.5, ys + 0.5


@pytest.mark.parametrize("kind", ["integer", "subpixel", "rotation"])
def test_backward_warp_reproduces_translated_and_rotated_images(kind):
    h, w = 48, 64
    x, y = _grid(h, w)
    if kind == "integer":
        tx, ty = 3.0 + 0 * x, -2.0 + 0 * y
    elif kind == "subpixel":
        tx, ty = 2.3 + 0 * x, 1.6 + 0 * y
    else:  # frame j = frame i rotated by 7 degrees about the image centre: p_j = R (p - c) + c
        a = math.radians(7.0)
        cx, cy = w / 2, h / 2
        tx = math.cos(a) * (x - cx) - math.sin(a) * (y - cy) + cx - x
        ty = math.sin(a) * (x - cx) + math.cos(a) * (y - cy) + cy - y
    image_j = torch.from_numpy(_smooth_image(x, y))[None]
    expected_i = _smooth_image(x + tx, y + ty)  # I_i(p) = I_j(p + flow)
    flow = torch.from_numpy(np.stack([tx, ty], -1).astype(np.float32))[None]
    warped, inside = backward_warp(image_j, flow, return_inside=True)
    err = np.abs(warped[0].numpy() - expected_i).max(axis=0)
    mask = inside[0].numpy() > 0
    assert mask.mean() > 0.75
    assert err[mask].max() < TOL
    if kind != "integer":
        assert err[~mask].max() > TOL  # outside, the border is repeated: the mask is needed


def test_zero_flow_is_identity_and_compose_adds_translations():
    img = torch.rand(1, 3, 20, 30)
    assert (backward_warp(img, torch.zeros(1, 20, 30, 2)) - img).abs().max().item() < 1e-5
    a = Correspondence(torch.tensor([1.5, -0.5]).expand(20, 30, 2), torch.ones(20, 30))
    b = Correspondence(torch.tensor([2.0, 1.0]).expand(20, 30, 2), torch.ones(20, 30))
    c = compose(a, b)
    assert torch.allclose(c.flow[5:15, 5:20], torch.tensor([3.5, 0.5]).expand(10, 15, 2), atol=1e-5)
    assert c.valid[:, -3:].sum() == 0 and c.valid[5:15, 5:20].min() == 1  # leaving the image breaks the chain


@pytest.fixture(scope="module")
def scene_folder(tmp_path_factory):
    scene = SyntheticScene(frames=6, width=64, height=48, motion=(2.0, 1.0))
    path = tmp_path_factory.mktemp("deflicker-passes")
    scene.write(path)
    return scene, PassFolder.open(path)


@pytest.mark.parametrize("a,b", [(3, 2), (3, 4), (3, 1), (1, 5), (5, 0)])
def test_occlusion_masks_match_the_known_ones(scene_folder, a, b):
    scene, folder = scene_folder
    ms = MotionSource.from_folder(folder)
    c = ms.correspondence(a, b)
    fa, fb = scene.frame_numbers[a], scene.frame_numbers[b]
    known_hidden = scene.square_mask(fb) & ~scene.square_mask(fa)  # wall points of frame a under the square in b
    hidden = (c.valid < 0.5).numpy()
    iou = (hidden & known_hidden).sum() / (hidden | known_hidden).sum()
    assert iou > 0.97, iou
    sq = scene.square_mask(fa)
    assert torch.allclose(c.flow[torch.from_numpy(sq)], torch.tensor(scene.motion) * (fb - fa))
    # the warped Combined pass of frame b equals frame a's wherever the correspondence is valid
    comb_b = torch.from_numpy(scene.combined(fb)).permute(2, 0, 1)[None]
    warped = backward_warp(comb_b, c.flow[None])[0].permute(1, 2, 0).numpy()
    err = np.abs(warped - scene.combined(fa)).max(-1)
    assert err[~hidden].max() < TOL
    assert err[hidden].max() > 0.1  # the occluded pixels really differ


def test_subpixel_motion_and_render_size_resampling(tmp_path):
    scene = SyntheticScene(frames=3, width=64, height=48, motion=(1.5, -0.5))
    scene.write(tmp_path)
    folder = PassFolder.open(tmp_path)
    c = correspondences(folder, 2, 1)  # frame numbers
    comb = torch.from_numpy(scene.combined(1)).permute(2, 0, 1)[None]
    warped = backward_warp(comb, c.flow[None])[0].permute(1, 2, 0).numpy()
    ok = c.mask.numpy()
    assert ok.mean() > 0.85
    # half-pixel sampling of the square's texture (0.1 cos((u + v) / 3) ...): bilinear error bound ~0.004
    assert np.abs(warped - scene.combined(2)).max(-1)[ok].max() < 2 * TOL
    # object index mismatch invalidates: no valid pixel of the square maps onto the wall
    sq = scene.square_mask(2)
    assert (ok & sq).sum() > 0.5 * sq.sum() and (ok & scene.square_boundary(2)).sum() < scene.square_boundary(2).sum()
    half = correspondences(folder, 2, 1, size=(24, 32))  # e.g. latent resolution: flow scaled, validity averaged
    assert half.flow.shape == (24, 32, 2)
    inner = torch.from_numpy(sq[1::2, 1::2]) & (half.valid == 1)
    assert torch.allclose(half.flow[inner], torch.tensor([-0.75, 0.25]), atol=1e-5)
    assert ((half.valid > 0) & (half.valid < 1)).any()


# ------------------------------------------------------------------------------------------------------------
# A static scene seen by a moving, turning camera: vectors from ray casting, compared with depth reprojection
# ------------------------------------------------------------------------------------------------------------

H, W, F = 48, 64, 5


def _camera_to_world(t: int) -> np.ndarray:
    a = 0.03 * t  # yaw
    m = np.eye(4)
    m[:3, :3] = [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]
    m[:3, 3] = [0.25 * t, 0.08 * t, -0.1 * t]
    return m


def _cast(t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World hit points (H, W, 3), planar depth and object index of frame t: a wall z=-10 and a panel at z=-5."""
    c2w = _camera_to_world(t)
    x, y = _grid(H, W)
    d_cam = np.stack([(x - W / 2) / W, -(y - H / 2) / W, -np.ones_like(x)], -1)
    d = d_cam @ c2w[:3, :3].T
    o = c2w[:3, 3]
    s_wall = (-10 - o[2]) / d[..., 2]
    s_panel = (-5 - o[2]) / d[..., 2]
    p_panel = o + s_panel[..., None] * d
    on_panel = (np.abs(p_panel[..., 0] - 0.5) <= 1.2) & (np.abs(p_panel[..., 1]) <= 0.8)
    s = np.where(on_panel, s_panel, s_wall)  # d_cam has z = -1, so the ray parameter is the planar depth
    return o + s[..., None] * d, s.astype(np.float32), np.where(on_panel, 2, 1).astype(np.int32)


def _project(points: np.ndarray, t: int) -> np.ndarray:
    """Image coordinates of world points in camera t (OpenCV-style K matrix after flipping Y and Z)."""
    w2c = np.linalg.inv(_camera_to_world(t))
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    cv = cam * np.array([1.0, -1.0, -1.0])
    k = np.array([[W, 0, W / 2], [0, W, H / 2], [0, 0, 1.0]])
    uvw = cv @ k.T
    return uvw[..., :2] / uvw[..., 2:]


def _moving_camera_passes() -> list[FramePasses]:
    out = []
    x, y = _grid(H, W)
    for t in range(F):
        pts, depth, index = _cast(t)
        prev, nxt = _project(pts, t - 1), _project(pts, t + 1)
        vector = np.stack([prev[..., 0] - x, -(prev[..., 1] - y), x - nxt[..., 0], -(y - nxt[..., 1])], -1)
        cam = FrameCamera(world_to_camera=np.linalg.inv(_camera_to_world(t)).tolist(), fx=W, fy=W, cx=W / 2, cy=H / 2)
        out.append(FramePasses(frame=10 + t, depth=depth, vector=vector.astype(np.float32), object_index=index,
                               camera=cam))
    return out


def test_reprojection_matches_the_vector_chain_for_a_static_scene_with_a_moving_camera():
    passes = _moving_camera_passes()
    chained = MotionSource(passes, chain_limit=8)
    reproj = MotionSource(passes, chain_limit=0)  # far frames: depth + camera reprojection only
    for a, b in [(0, 3), (4, 1), (2, 3)]:
        c, r = chained.correspondence(a, b), reproj.correspondence(a, b)
        both = c.mask & r.mask
        assert both.float().mean() > 0.7
        assert (c.flow - r.flow).norm(dim=-1)[both].max() < 0.05
        iou = (c.mask & r.mask).sum() / (c.mask | r.mask).sum()
        assert iou > 0.97, iou
        # ground truth from ray casting
        pts, _, _ = _cast(a)
        x, y = _grid(H, W)
        truth = torch.from_numpy((_project(pts, b) - np.stack([x, y], -1)).astype(np.float32))
        assert (r.flow - truth).norm(dim=-1)[r.mask].max() < 1e-3
    # panel pixels hidden behind nothing but moved out of view / wall pixels behind the panel are invalid
    r = reproj.correspondence(0, 4)
    _, _, idx0 = _cast(0)
    hidden = ~r.mask.numpy() & (idx0 == 1)
    assert hidden.sum() > 20


def test_reprojection_refuses_moving_objects_and_auto_falls_back_to_estimated_flow(scene_folder, monkeypatch):
    scene, folder = scene_folder
    far = MotionSource.from_folder(folder)
    far.chain_limit = 0
    c = far.correspondence(0, 4)
    assert not c.mask[torch.from_numpy(scene.square_mask(scene.frame_numbers[0]))].any()  # square moves: untrusted
    assert c.mask[torch.from_numpy(scene.sky_mask() | scene.floor_mask())].float().mean() > 0.95
    # no vector pass and no cameras: auto uses estimated flow (DIS) on the guides, exact is refused; PatchMatch on request
    calls = []

    def fake(guide_i, guide_j, init_flow=None, radius=None, **kw):
        calls.append((guide_i.shape, init_flow))
        shape = guide_i.shape[:2]
        return (Correspondence(torch.zeros(*shape, 2), torch.ones(shape)),
                Correspondence(torch.full((*shape, 2), 0.5), torch.ones(shape)))

    monkeypatch.setattr("neurender.deflicker.patchmatch.estimate_correspondence_pair", fake)
    frames = [np.random.rand(16, 24, 3).astype(np.float32) for _ in range(3)]
    plain = MotionSource(guides=frames)
    assert plain.resolve("auto") == "flow"
    with pytest.raises(InputError, match="vector pass or cameras"):
        plain.resolve("exact")
    out = plain.correspondence(0, 2, "patchmatch")
    assert out.flow.shape == (16, 24, 2) and calls == [((16, 24, 3), None)]
    assert float(out.flow.abs().max()) == 0.0
    # the reverse direction comes from the same search (its backward field), once
    back = plain.correspondence(2, 0, "patchmatch")
    assert len(calls) == 1 and torch.equal(back.flow, torch.full((16, 24, 2), 0.5))
    plain.correspondence(2, 0, "patchmatch")
    assert len(calls) == 2
    # with passes, PatchMatch starts from the exact motion
    calls.clear()
    ms = MotionSource.from_folder(folder, frames=[1, 2])
    ms.correspondence(0, 1, "patchmatch")
    assert calls[0][1] is not None and torch.allclose(calls[0][1][torch.from_numpy(scene.square_mask(1))],
                                                      torch.tensor(scene.motion))


def test_sky_turns_with_the_camera_although_its_vector_pass_is_zero():
    passes = _moving_camera_passes()
    x, y = _grid(H, W)
    sky = y < 12  # make the top rows empty sky: no geometry, depth +inf, vector 0, object index 0
    for p in passes:
        p.depth = np.where(sky, np.inf, p.depth).astype(np.float32)
        p.vector = np.where(sky[..., None], 0.0, p.vector).astype(np.float32)
        p.object_index = np.where(sky, 0, p.object_index).astype(np.int32)
    ms = MotionSource(passes)
    c = ms.correspondence(1, 2)
    c2w = _camera_to_world(1)
    d = np.stack([(x - W / 2) / W, -(y - H / 2) / W, -np.ones_like(x)], -1) @ c2w[:3, :3].T
    truth = _project(c2w[:3, 3] + 1e7 * d, 2) - np.stack([x, y], -1)  # directions at infinity
    m = torch.from_numpy(sky) & c.mask
    assert m.sum() > 0.8 * sky.sum() - 3 * W  # the sky stays valid except where it leaves the frame
    assert (c.flow - torch.from_numpy(truth).float()).norm(dim=-1)[m].max() < 0.01
    assert truth[sky].__abs__().max() > 1.0  # the camera really turns

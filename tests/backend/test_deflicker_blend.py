"""Blending along exact motion on a flickering synthetic sequence; the DiffSynth contrast/sharpness options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance

from neurender.deflicker.blend import temporal_weight
from neurender.deflicker.enhance import compensate_colour, contrast, sharpness
from neurender.deflicker.motion import MotionSource
from neurender.deflicker.sequence import Deflicker, DeflickerOptions, deflicker_frames
from neurender.deflicker.warp import backward_warp
from neurender.passes.folder import FramePasses
from support.synthetic_passes import SyntheticScene

N, W, H = 8, 64, 48


def _passes(scene: SyntheticScene) -> list[FramePasses]:
    out = []
    for f in scene.frame_numbers:
        d = scene.depth(f)
        out.append(FramePasses(frame=f, depth=np.where(d > 1e9, np.inf, d).astype(np.float32), vector=scene.vector(f),
                               object_index=scene.object_index(f), camera=scene.camera(f)))
    return out


@pytest.fixture(scope="module")
def sequence():
    scene = SyntheticScene(frames=N, width=W, height=H, motion=(2.0, 1.0))
    clean = np.stack([scene.combined(f) for f in scene.frame_numbers]).clip(0, 1)
    rng = np.random.RandomState(0)
    ys, xs = np.mgrid[0:H, 0:W] / 16.0
    flicker = []
    for _ in range(N):  # per-frame gain, colour cast and a low-frequency blob pattern: what SD frames do
        blob = 0.06 * np.sin(xs * rng.uniform(0.5, 1.5) + rng.uniform(0, 6)) * np.cos(ys * rng.uniform(0.5, 1.5))
        flicker.append(rng.uniform(0.9, 1.1) + blob[..., None] + rng.uniform(-0.04, 0.04, 3))
    noisy = np.clip(clean * np.stack(flicker), 0, 1).astype(np.float32)
    return scene, clean.astype(np.float32), noisy


def _known_warp_error(scene: SyntheticScene, frames: np.ndarray) -> float:
    """Lai et al. 2018 warp error with the scene's known motion: mean_t masked mean |O_t - W(O_t+1)|^2."""
    errs = []
    for t in range(N - 1):
        f = scene.frame_numbers[t]
        flow = torch.from_numpy(scene.flow_to_next(f))[None]
        nxt = torch.from_numpy(frames[t + 1]).permute(2, 0, 1)[None]
        warped = backward_warp(nxt, flow)[0].permute(1, 2, 0).numpy()
        visible = ~(scene.square_mask(f + 1) & ~scene.square_mask(f))
        errs.append(((frames[t] - warped) ** 2).sum(-1)[visible].mean())
    return float(np.mean(errs))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def _gradient_energy(frames: np.ndarray) -> float:
    return float(np.mean(np.abs(np.diff(frames, axis=1))) + np.mean(np.abs(np.diff(frames, axis=2))))


def test_exact_motion_blend_removes_flicker_and_keeps_sharpness(sequence):
    scene, clean, noisy = sequence
    ms = MotionSource(_passes(scene))
    out = deflicker_frames(noisy, ms, DeflickerOptions(window=3))
    e_noisy, e_out, e_clean = (_known_warp_error(scene, x) for x in (noisy, out, clean))
    assert e_clean < 1e-5  # the metric itself is exact on the clean sequence
    assert e_out < 0.35 * e_noisy, (e_out, e_noisy)
    assert _psnr(out, clean) > _psnr(noisy, clean) + 2.0
    ratio = _gradient_energy(out) / _gradient_energy(clean)
    assert 0.9 < ratio < 1.1, ratio
    # the same blend without motion (zero flow everywhere) ghosts the moving square: exact motion is what helps
    zero = Deflicker(_static_copy(scene), DeflickerOptions(window=3))
    ghost = zero(torch.from_numpy(noisy).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    sq = np.stack([scene.square_boundary(f) for f in scene.frame_numbers])
    assert np.abs(out - clean).max(-1)[sq].mean() < 0.5 * np.abs(ghost - clean).max(-1)[sq].mean()


def _static_copy(scene: SyntheticScene) -> MotionSource:
    """A MotionSource with the same pairs but zero vectors (every pixel assumed still)."""
    passes = _passes(scene)
    for p in passes:
        p.vector = np.zeros_like(p.vector)
        p.object_index = np.zeros_like(p.object_index)
        p.depth = np.full_like(p.depth, 5.0)
    return MotionSource(passes)


def test_disoccluded_pixels_fall_back_to_the_frame_itself(sequence):
    scene, _, noisy = sequence
    ms = MotionSource(_passes(scene))
    d = Deflicker(ms, DeflickerOptions(window=1, engine="average"))
    images = torch.from_numpy(noisy).permute(0, 3, 1, 2)
    out = d(images)
    plan = d.plan
    for i in (0, N - 1):  # end frames have one neighbour: wall the square uncovers there is seen by no other frame
        seen = plan.weights[plan.targets == i].sum(0)[0]
        alone = seen == 0
        assert alone.sum() > 5
        assert torch.allclose(out[i][:, alone], images[i][:, alone], atol=1e-6)
        assert not torch.allclose(out[i][:, ~alone], images[i][:, ~alone], atol=1e-3)
    assert temporal_weight(0, 3) == 1 and temporal_weight(2, 3) == 0.5 and temporal_weight(4, 3) == 0


def test_contrast_and_sharpness_match_pil_image_enhance():
    rng = np.random.RandomState(1)
    img = (rng.rand(20, 24, 3) * 200 + 20).astype(np.uint8)
    t = torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None]
    for op, enh in ((contrast, ImageEnhance.Contrast), (sharpness, ImageEnhance.Sharpness)):
        ours = (op(t, 1.1)[0].permute(1, 2, 0).numpy() * 255).round()
        theirs = np.asarray(enh(Image.fromarray(img)).enhance(1.1), dtype=np.float32)
        assert np.abs(ours - theirs).max() <= 2.0, op.__name__
        assert np.abs(ours - img).max() >= 3  # and they actually change the image


def test_colour_compensation_removes_global_gain_flicker():
    base = torch.rand(1, 3, 16, 16).expand(6, 3, 16, 16)
    gains = torch.tensor([1.0, 1.2, 0.8, 1.1, 0.9, 1.0])[:, None, None, None]
    flick = base * gains
    out = compensate_colour(flick, flick, window=6)
    means = out.mean(dim=(1, 2, 3))
    assert means.std() < 0.02 * flick.mean(dim=(1, 2, 3)).std() + 1e-6


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_a_clean_sequence_passes_through_without_bleeding_between_objects(interpolation):
    scene = SyntheticScene(frames=5, width=W, height=H, motion=(1.5, -0.5))
    clean = np.stack([scene.combined(f) for f in scene.frame_numbers]).clip(0, 1).astype(np.float32)
    out = deflicker_frames(clean, MotionSource(_passes(scene), interpolation=interpolation), DeflickerOptions(window=2))
    err = np.abs(out - clean).max(-1)
    assert err.max() < 2.5 / 255, (interpolation, float(err.max()))  # square vs wall colours differ by ~0.5


def test_bicubic_keeps_fine_detail_that_bilinear_blurs():
    import cv2
    from skimage import data

    photo = data.camera().astype(np.float32)[100:260, 150:310] / 255
    n, s, (dx, dy) = 5, 96, (1.37, 0.61)
    clean = []
    for t in range(n):  # content moves by (-dx, -dy) per frame
        m = np.float32([[1, 0, 20 + dx * t], [0, 1, 20 + dy * t]])
        clean.append(cv2.warpAffine(photo, m, (s, s), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP))
    clean = np.repeat(np.stack(clean)[..., None], 3, -1).clip(0, 1)
    vec = np.zeros((s, s, 4), np.float32)
    vec[...] = (dx, -dy, dx, -dy)
    passes = [FramePasses(frame=t, depth=np.full((s, s), 5.0, np.float32), vector=vec,
                          object_index=np.ones((s, s), np.int32)) for t in range(n)]
    inner = (slice(None), slice(8, -8), slice(8, -8), 0)
    lap_clean = np.stack([cv2.Laplacian(f, cv2.CV_32F) for f in clean[inner]])
    gains = {}
    for interpolation in ("bilinear", "bicubic"):
        out = deflicker_frames(clean, MotionSource(passes, interpolation=interpolation), DeflickerOptions(window=2))
        lap = np.stack([cv2.Laplacian(np.ascontiguousarray(f), cv2.CV_32F) for f in out[inner]])
        gains[interpolation] = float((lap * lap_clean).sum() / (lap_clean ** 2).sum())
    assert gains["bicubic"] > 0.85 and gains["bicubic"] > gains["bilinear"] + 0.08, gains

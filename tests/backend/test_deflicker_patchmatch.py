"""PatchMatch correspondences (known shifts, motion prior, validity) and FastBlend-style blending modes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from neurender.deflicker import patchmatch as pm
from neurender.deflicker.fastblend import fastblend, remap
from neurender.errors import InputError

S = 96


def texture(seed: int = 0, size: int = S, sigma: float = 1.2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (0, 0), sigma)
    return (t - t.min()) / (t.max() - t.min())


def shifted(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Frame j with j(p + d) = img(p): the true flow img -> j is (dx, dy) everywhere."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def epe(corr, dx: float, dy: float) -> tuple[float, float]:
    f = corr.flow.numpy()
    v = corr.valid.numpy() > 0.5
    e = np.hypot(f[..., 0] - dx, f[..., 1] - dy)
    return float(np.median(e[v])), float(v.mean())


@pytest.mark.parametrize("dx,dy", [(5.0, -3.0), (3.4, 2.6)])
def test_recovers_known_shift(dx, dy):
    img = texture()
    c = pm.estimate_correspondence(img, shifted(img, dx, dy))
    median, valid = epe(c, dx, dy)
    assert median < (0.25 if float(dx).is_integer() else 0.5), median
    assert valid > 0.7
    # the columns that leave the image have no true match: mostly invalid, unlike the interior
    strip = c.valid[:, S - int(dx):].mean()  # columns whose match lies over 1 px outside
    assert strip < 0.15 and c.valid[10:-10, 10:-10].mean() > 0.9


def test_motion_prior_with_small_radius_absorbs_the_residual():
    img = texture(1)
    dx, dy = 6.3, -4.7
    prior = np.zeros((S, S, 2), np.float32)
    prior[..., 0], prior[..., 1] = dx + 1.6, dy - 1.2  # a wrong-by-2-px prior
    c = pm.estimate_correspondence(img, shifted(img, dx, dy), init_flow=prior, radius=3)
    median, valid = epe(c, dx, dy)
    assert median < 0.5 and valid > 0.7
    # the radius really bounds the search: a prior 10 px off cannot be repaired within 3 px
    far = prior + np.float32([10, 0])
    median_far, _ = epe(pm.estimate_correspondence(img, shifted(img, dx, dy), init_flow=far, radius=3), dx, dy)
    assert median_far > 5


def test_style_term_and_bad_inputs():
    img = texture(2)
    j = shifted(img, 2, 1)
    c = pm.estimate_correspondence(img, j, style_i=img[..., :1], style_j=j[..., :1], guide_weight=0.5)
    assert epe(c, 2, 1)[0] < 0.25
    with pytest.raises(InputError):
        pm.estimate_correspondence(img, j[:50])
    with pytest.raises(InputError):
        pm.estimate_correspondence(img, j, style_i=img)
    with pytest.raises(InputError):
        pm.estimate_correspondence(img, j, patch=4)


def test_identity_field_keeps_one_integer_dtype_across_levels(monkeypatch):
    """FastBlend's fault: an int64 identity field read as int32 at level 0. Every level must see FIELD_DTYPE."""
    seen = []
    original = pm._search_level

    def spy(src, tgt, ok, field, **kw):
        seen.append((field.dtype, tuple(field.shape)))
        return original(src, tgt, ok, field, **kw)

    monkeypatch.setattr(pm, "_search_level", spy)
    img = texture(3, size=128)
    c = pm.estimate_correspondence(img, img)
    assert {d for d, _ in seen} == {pm.FIELD_DTYPE}
    assert len(seen) == 2 * int(np.log2(128 / 13))  # levels per direction
    assert float(c.flow.abs().max()) < 0.5 and float(c.valid.mean()) > 0.99


def test_remap_moves_style_along_the_correspondence():
    img = texture(4)
    dx, dy = 4.0, -2.0
    j = shifted(img, dx, dy)
    flow = torch.zeros(S, S, 2)
    flow[..., 0], flow[..., 1] = dx, dy
    corr = pm.Correspondence(flow, torch.ones(S, S))
    out, weight = remap(torch.from_numpy(j).permute(2, 0, 1), corr, patch=5)
    inner = (slice(8, -8), slice(8, -8))
    err = np.abs(out.permute(1, 2, 0).numpy()[inner] - img[inner]).max()
    assert err < 1e-4 and float(weight.min()) > 0.99


def flickering(n: int = 6, size: int = 64, seed: int = 5):
    """A texture panning 2 px/frame; styles = per-frame gain/colour flicker plus noise of the clean frames."""
    rng = np.random.default_rng(seed)
    tex = texture(seed, size=size + 2 * n + 4, sigma=1.5)
    clean = np.stack([tex[2: 2 + size, 2 * t: 2 * t + size] for t in range(n)])
    gain = 1 + 0.15 * rng.standard_normal((n, 1, 1, 3))
    styles = np.clip(clean * gain + 0.03 * rng.standard_normal(clean.shape), 0, 1).astype(np.float32)
    return clean, styles


def flicker(x: np.ndarray, clean: np.ndarray) -> float:
    return float(np.std(x.mean(axis=(1, 2, 3)) - clean.mean(axis=(1, 2, 3))))


def psnr(x: np.ndarray, clean: np.ndarray) -> float:
    return float(10 * np.log10(1 / np.mean((x - clean) ** 2)))


@pytest.mark.parametrize("mode", ["balanced", "fast", "accurate"])
def test_blending_modes_reduce_flicker(mode):
    clean, styles = flickering()
    out = fastblend(styles, clean, mode=mode, window=2, iterations=3)
    assert out.shape == styles.shape and out.dtype == np.float32
    assert flicker(out, clean) < 0.6 * flicker(styles, clean)
    assert psnr(out, clean) > psnr(styles, clean) + 2


def test_interpolation_from_keyframes():
    clean, styles = flickering()
    keys = [0, 5]
    stylised = styles.copy()
    stylised[1:5] = 0.0  # only keyframes carry a style
    out = fastblend(stylised, clean, mode="interpolate", keyframes=keys, iterations=3)
    np.testing.assert_array_equal(out[keys], stylised[keys])
    assert psnr(out[1:5], clean[1:5]) > 20  # the keyframes' content lands on the in-between frames
    with pytest.raises(InputError):
        fastblend(stylised, clean, mode="interpolate")
    with pytest.raises(InputError):
        fastblend(stylised, clean[:3])

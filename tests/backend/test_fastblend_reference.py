"""The FastBlend port the deflicker benchmark compares against (scripts/fastblend_reference.py) does what FastBlend does."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="the reference compiles its kernels with cc")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.uniform(0, 1, (h, w, 3)).astype(np.float32), (0, 0), 1.5)
    return (t - t.min()) / (t.max() - t.min())


def test_the_field_follows_a_known_shift_and_still_frames_come_back_unchanged():
    import fastblend_reference as fr

    big = _texture(96, 96)
    a, b = big[8:72, 8:72], big[10:74, 11:75]  # frame b shows frame a's content moved by (-3, -2)
    engine = fr.PyramidPatchMatcher(64, 64, 3)
    nnf, remapped = engine.estimate_nnf(b[None] * 255, a[None] * 255, b[None] * 255)  # target a, source b
    ys, xs = np.mgrid[0:64, 0:64]
    inner = (slice(8, 56), slice(8, 56))
    hit = (nnf[0, ..., 0] == ys - 2) & (nnf[0, ..., 1] == xs - 3)
    assert hit[inner].mean() > 0.9, hit[inner].mean()
    assert np.abs(remapped[0] / 255 - a)[inner].mean() < 0.02
    still = np.stack([a] * 5)
    for mode in ("fast", "balanced"):
        out = fr.fastblend(still, still, mode, window=2)
        assert np.abs(out - still).max() <= 1.0 / 255 + 1e-6, mode


def test_loading_the_kernels_leaves_the_process_floating_point_state_alone():
    """A kernel built with -ffast-math turns on flush-to-zero for the whole test process when it loads, and every
    later test computes differently (hypothesis refused to run test_server_schema after it)."""
    import fastblend_reference as fr

    fr._lib()
    tiny = np.finfo(np.float32).tiny
    assert np.float32(tiny) / np.float32(4) > 0  # a subnormal survives
    assert float(np.nextafter(np.float64(0), np.float64(1))) > 0

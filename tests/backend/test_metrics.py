"""Metrics on synthetic sequences with known answers, and ``neurender metrics --json`` end to end."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from neurender.metrics import fidelity, temporal
from neurender.metrics.motion import PairMotion, consistency_mask, dis_motion
from neurender.metrics.plot import plot_warp_error
from neurender.metrics.report import evaluate

H, W = 48, 64


def texture(seed: int = 0, h: int = H + 20, w: int = W + 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 1.5)
    return (t - t.min()) / (t.max() - t.min())


def moving(n: int = 6, step: int = 2) -> list[np.ndarray]:
    """A texture sliding left by ``step`` px per frame: frame t+1 at p is frame t at p + (step, 0)."""
    tex = texture()
    return [tex[5:5 + H, step * t: step * t + W].copy() for t in range(n)]


def exact_pairs(n: int, step: int) -> list[PairMotion]:
    """Flow t -> t+1 of ``moving``: frame t's p appears in frame t+1 at p - (step, 0)."""
    flow = np.zeros((H, W, 2), np.float32)
    flow[..., 0] = -step
    back = -flow
    return [PairMotion(flow, consistency_mask(flow, back)) for _ in range(n - 1)]


def test_static_identical_frames_have_zero_warp_error_and_capped_psnr():
    frame = texture()[:H, :W]
    frames = [frame] * 4
    r = evaluate(frames, reference=frames)
    assert r["warp_error"] == pytest.approx(0.0, abs=1e-12)
    assert r["pixel_mse"] == pytest.approx(0.0, abs=1e-12)
    assert r["psnr"] == fidelity.PSNR_CAP
    assert r["ssim"] == pytest.approx(1.0, abs=1e-9)
    assert r["brightness_flicker"] == pytest.approx(0.0, abs=1e-12)
    assert r["sharpness_ratio_gradient"] == pytest.approx(1.0)


def test_moving_sequence_warp_error_zero_with_exact_motion_and_positive_without():
    frames = moving(6, 2)
    motion = exact_pairs(6, 2)
    we = temporal.warp_errors(frames, motion)
    assert np.all(we < 1e-10)
    # the occlusion mask drops exactly the 2 columns that leave the image
    assert motion[0].mask.sum() == H * (W - 2)
    still = [PairMotion(np.zeros((H, W, 2), np.float32), np.ones((H, W), bool))] * 5
    assert temporal.warp_errors(frames, still).min() > 1e-3


def test_dis_motion_recovers_the_shift_and_gives_small_warp_error():
    frames = moving(4, 3)
    motion = dis_motion(frames)
    fx = motion[0].flow[..., 0][motion[0].mask]
    assert np.median(fx) == pytest.approx(-3.0, abs=0.3)
    assert motion[0].mask.mean() > 0.8
    still = [PairMotion(np.zeros((H, W, 2), np.float32), np.ones((H, W), bool))] * 3
    assert temporal.warp_errors(frames, motion).mean() < 0.2 * temporal.warp_errors(frames, still).mean()


def test_known_brightness_flicker_is_its_std():
    rng = np.random.default_rng(1)
    clean = [0.2 + 0.6 * texture(s)[:H, :W] for s in range(8)]  # stays within 0..1 after the offsets
    offsets = rng.uniform(-0.08, 0.08, size=8)
    flick = [c + o for c, o in zip(clean, offsets)]
    assert temporal.brightness_flicker(flick, clean) == pytest.approx(np.std(offsets), rel=1e-6)
    assert temporal.brightness_flicker(clean, clean) == pytest.approx(0.0, abs=1e-12)


def test_psnr_matches_the_definition_and_ssim_is_in_unit_range():
    a = texture()[:H, :W]
    rng = np.random.default_rng(2)
    noise = rng.normal(0, 0.05, a.shape)
    b = a + noise
    assert fidelity.psnr(b, a) == pytest.approx(10 * math.log10(1 / np.mean(noise**2)), rel=1e-9)
    s_small = fidelity.ssim(np.clip(a + 0.3 * noise, 0, 1), a)
    s_big = fidelity.ssim(np.clip(a + 3 * noise, 0, 1), a)
    assert 0.0 <= s_big < s_small < 1.0
    with pytest.raises(ValueError):
        fidelity.psnr(a, a[:10])


def test_sharpness_ratio_drops_for_a_blurred_sequence():
    frames = moving(3, 1)
    blurred = [cv2.GaussianBlur(f, (0, 0), 2.0) for f in frames]
    r = evaluate(blurred, reference=frames, motion=exact_pairs(3, 1))
    assert r["sharpness_ratio_gradient"] < 0.7
    assert r["sharpness_ratio_laplacian"] < r["sharpness_ratio_gradient"]
    assert r["psnr"] < fidelity.PSNR_CAP


def test_plot_writes_a_png(tmp_path):
    path = plot_warp_error({"a": [0.1, 0.2, float("nan"), 0.05], "b": [0.0, 0.01, 0.02, 0.03]}, tmp_path / "we.png")
    img = cv2.imread(str(path))
    assert img is not None and img.shape[0] > 100 and img.shape[1] > 100


def _write(folder, frames):
    folder.mkdir()
    for n, f in enumerate(frames, start=1):
        cv2.imwrite(str(folder / f"frame_{n:04d}.png"), (np.clip(f, 0, 1)[..., ::-1] * 255).round().astype(np.uint8))


def test_cli_metrics_json_end_to_end(tmp_path, capsys):
    from neurender.cli import main

    clean = moving(5, 2)
    rng = np.random.default_rng(3)
    offsets = rng.uniform(-0.06, 0.06, size=5)
    flick = [np.clip(0.1 + 0.8 * c + o, 0, 1) for c, o in zip(clean, offsets)]
    _write(tmp_path / "ref", [0.1 + 0.8 * c for c in clean])
    _write(tmp_path / "out", flick)
    code = main(["metrics", str(tmp_path / "out"), "--reference", str(tmp_path / "ref"), "--json",
                 "--plot", str(tmp_path / "plot.png")])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["frames"] == 5 and result["frame_numbers"] == [1, 2, 3, 4, 5]
    assert result["motion"] == "dis:reference"
    assert result["brightness_flicker"] == pytest.approx(np.std(offsets), abs=0.004)  # 8-bit rounding
    assert result["warp_error"] > result["reference_warp_error"]
    assert 0 < result["ssim"] < 1 and result["psnr"] > 20
    assert (tmp_path / "plot.png").is_file()
    # a missing reference frame is the user's error (exit code 2)
    (tmp_path / "ref" / "frame_0003.png").unlink()
    assert main(["metrics", str(tmp_path / "out"), "--reference", str(tmp_path / "ref"), "--json"]) == 2


def test_cli_metrics_exact_motion_from_a_pass_folder(tmp_path, capsys):
    from support.synthetic_passes import SyntheticScene

    from neurender.cli import main

    scene = SyntheticScene(frames=5, width=64, height=48, motion=(2.0, 0.0), frame_start=11)
    scene.write(tmp_path / "passes")
    frames = [scene.combined(f) for f in scene.frame_numbers]
    (tmp_path / "out").mkdir()
    for f, rgb in zip(scene.frame_numbers, frames):
        cv2.imwrite(str(tmp_path / "out" / f"frame_{f:04d}.png"), (rgb[..., ::-1] * 255).round().astype(np.uint8))
    assert main(["metrics", str(tmp_path / "out"), "--passes", str(tmp_path / "passes"), "--json"]) == 0
    exact = json.loads(capsys.readouterr().out)
    assert exact["motion"] == "exact:vector-pass" and exact["frame_numbers"] == [11, 12, 13, 14, 15]
    assert exact["warp_error"] < 1e-4  # only 8-bit rounding remains along exact motion
    assert 0.8 < exact["visible_fraction"] < 1.0  # the square's trailing edge and the left border are occluded
    # the same frames judged without motion compensation: the moving square counts as flicker
    still = evaluate(frames, motion=[PairMotion(np.zeros((48, 64, 2), np.float32), np.ones((48, 64), bool))] * 4)
    assert still["warp_error"] > 100 * max(exact["warp_error"], 1e-6)

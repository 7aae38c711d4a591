"""``neurender deflicker`` end to end: PNG (8/16-bit) and EXR sequences, matching to pass frames, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from neurender.cli import main
from neurender.deflicker.sequence_io import list_sequence, read_image
from neurender.passes.exr import write_multilayer_exr
from support.synthetic_passes import SyntheticScene

N, W, H = 6, 48, 32


@pytest.fixture(scope="module")
def shot(tmp_path_factory):
    scene = SyntheticScene(frames=N, width=W, height=H, motion=(2.0, 0.0), frame_start=11)
    root = tmp_path_factory.mktemp("cli-shot")
    scene.write(root / "passes")
    rng = np.random.RandomState(0)
    clean = {f: scene.combined(f).clip(0, 1) for f in scene.frame_numbers}
    noisy = {f: np.clip(c * rng.uniform(0.85, 1.15) + rng.uniform(-0.05, 0.05, 3), 0, 1) for f, c in clean.items()}
    return scene, root, clean, noisy


def _write_pngs(folder, frames: dict, bits: int = 8) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    scale, dtype = (255, np.uint8) if bits == 8 else (65535, np.uint16)
    for f, rgb in frames.items():
        cv2.imwrite(str(folder / f"shot_v2_{f:04d}.png"), (rgb[..., ::-1] * scale).round().astype(dtype))


def _flicker(scene, frames: dict) -> float:
    """Mean squared frame difference on the static wall: global flicker shows up there directly."""
    wall = ~np.logical_or.reduce([scene.square_mask(f) for f in scene.frame_numbers])
    fs = scene.frame_numbers
    return float(np.mean([((frames[a] - frames[b]) ** 2).sum(-1)[wall].mean() for a, b in zip(fs, fs[1:])]))


@pytest.mark.parametrize("bits", [8, 16])
def test_cli_deflickers_a_png_sequence_with_exact_motion(shot, tmp_path, bits):
    scene, root, _, noisy = shot
    _write_pngs(tmp_path / "in", noisy, bits)
    code = main(["deflicker", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--passes", str(root / "passes"),
                 "--window", "2", "--method", "exact"])
    assert code == 0
    outs = list_sequence(tmp_path / "out")
    assert [f.number for f in outs] == scene.frame_numbers
    assert [f.path.name for f in outs] == [f"shot_v2_{n:04d}.png" for n in scene.frame_numbers]
    assert not list((tmp_path / "out").glob(".*"))  # no temporaries left
    images = {f.number: read_image(f.path) for f in outs}
    assert {im.kind for im in images.values()} == {f"png{bits}"}
    result = {n: im.rgb for n, im in images.items()}
    assert _flicker(scene, result) < 0.3 * _flicker(scene, noisy)


def test_cli_exr_sequence_without_passes_uses_patchmatch(shot, tmp_path, monkeypatch):
    scene, _, _, noisy = shot
    (tmp_path / "in").mkdir()
    picked = scene.frame_numbers[:3]
    for f in picked:
        write_multilayer_exr(tmp_path / "in" / f"beauty.{f}.exr", {c: noisy[f][..., k] * 4.0 for k, c in enumerate("RGB")})
    calls = []

    def fake(guide_i, guide_j, init_flow=None, radius=None, **kw):
        import torch

        from neurender.deflicker.correspondence import Correspondence

        calls.append(init_flow)
        c = Correspondence(torch.zeros(H, W, 2), torch.ones(H, W))
        return c, c

    monkeypatch.setattr("neurender.deflicker.patchmatch.estimate_correspondence_pair", fake)
    assert main(["deflicker", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--window", "1",
                 "--method", "patchmatch", "--engine", "average"]) == 0
    assert len(calls) == 2 and all(c is None for c in calls)  # one search per frame pair, both directions
    out = [read_image(tmp_path / "out" / f"beauty.{f}.exr") for f in picked]
    assert out[0].kind == "exr" and out[1].rgb.max() > 1.5  # linear HDR values survive
    # with zero motion and full validity the middle frame is the weighted mean of its neighbours
    src = [noisy[f] * 4.0 for f in picked]
    assert np.allclose(out[1].rgb, (src[1] + 0.5 * src[0] + 0.5 * src[2]) / 2.0, atol=1e-4)


def test_cli_errors_are_clear_and_exit_with_2(shot, tmp_path, caplog):
    scene, root, _, noisy = shot
    assert main(["deflicker", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in caplog.text
    _write_pngs(tmp_path / "in", {99: noisy[scene.frame_numbers[0]], 100: noisy[scene.frame_numbers[1]]})
    caplog.clear()
    assert main(["deflicker", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--passes", str(root / "passes")]) == 2
    assert "outside" in caplog.text or "not in the pass folder" in caplog.text
    caplog.clear()
    assert main(["deflicker", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--method", "exact"]) == 2
    assert "--passes" in caplog.text
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "cover.png").write_bytes(b"not a png")
    caplog.clear()
    assert main(["deflicker", str(tmp_path / "bad"), "--out", str(tmp_path / "o")]) == 2
    assert "no frame number" in caplog.text
    assert not (tmp_path / "o").exists()  # nothing written on bad input

"""Control images derived from exact passes: depth, normals, edges, depth-range smoothing, the builder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from neurender.controls.builder import ControlBuilder
from neurender.controls.depth import depth_to_control, foreground_range, shot_depth_range
from neurender.controls.edges import geometric_edges
from neurender.controls.normal import camera_space_normals, normals_to_control
from neurender.controls.smoothing import per_frame_depth_ranges, savgol_smooth
from neurender.errors import InputError, PassFolderError
from neurender.passes.folder import PassFolder

from support.synthetic_passes import SyntheticScene


def _rot_y(deg: float) -> np.ndarray:
    a = math.radians(deg)
    m = np.eye(4)
    m[0, 0], m[0, 2], m[2, 0], m[2, 2] = math.cos(a), math.sin(a), -math.sin(a), math.cos(a)
    return m


@pytest.fixture
def leaving(tmp_path):
    """The square leaves the image half way: per-frame depth ranges differ, the shot range does not."""
    scene = SyntheticScene(frames=8, width=64, height=48, motion=(12.0, 0.0))
    scene.write(tmp_path / "shot")
    return scene, PassFolder.open(tmp_path / "shot")


# ------------------------------------------------------------------------------------------------------------------
# Depth


def test_depth_to_control_formula():
    z = np.array([[2.0, 4.0, 8.0, 1.0, 100.0, np.inf]])
    c = depth_to_control(z, 2.0, 8.0)
    expected_mid = (1 / 4 - 1 / 8) / (1 / 2 - 1 / 8)  # 1/3: inverse depth, not linear depth
    np.testing.assert_allclose(c[0], [1.0, expected_mid, 0.0, 1.0, 0.0, 0.0], atol=1e-7)
    assert c.dtype == np.float32
    with pytest.raises(ValueError):
        depth_to_control(z, 8.0, 2.0)


def test_depth_control_is_shot_wide_constant_for_static_pixels(leaving):
    scene, pf = leaving
    ranges = {f: foreground_range(pf.read(f).depth) for f in pf.frames}
    assert len({r[0] for r in ranges.values()}) > 1  # per-frame normalisation WOULD change static pixels
    builder = ControlBuilder(pf, ["depth"], 64, 48)
    assert builder.depth_ranges[1] == pytest.approx(scene.depth_range())
    controls = {f: builder.arrays(f)["depth"][..., 0] for f in pf.frames}
    static = ~np.any([scene.square_mask(f) for f in pf.frames], axis=0)
    first = controls[1][static]
    for f in pf.frames[1:]:
        np.testing.assert_array_equal(controls[f][static], first)
    # near = white, background (sky) = black, the floor in between and brighter towards the camera
    assert np.all(controls[1][scene.square_mask(1)] == 1.0)
    assert np.all(controls[1][scene.sky_mask()] == 0.0)
    floor_col = controls[1][scene.floor_mask()[:, 0], 0]
    assert np.all(np.diff(floor_col) > 0) and 0 < floor_col.min() < floor_col.max() < 1


def test_shot_depth_range_prefers_the_manifest(tmp_path):
    scene = SyntheticScene(frames=3, width=16, height=12)
    scene.write(tmp_path, with_depth_range=True)
    assert shot_depth_range(PassFolder.open(tmp_path)) == pytest.approx(scene.depth_range())
    data = json.loads((tmp_path / "manifest.json").read_text())
    data["depth_range"] = [2.5, 20.0]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    assert shot_depth_range(PassFolder.open(tmp_path)) == (2.5, 20.0)


def test_shot_depth_range_without_geometry_is_an_error(tmp_path):
    scene = SyntheticScene(frames=2, width=16, height=12, sky_rows=12)  # sky everywhere except the square
    scene.square_start = (100.0, 100.0)  # ... which is outside the image
    scene.write(tmp_path)
    with pytest.raises(PassFolderError, match="no geometry"):
        shot_depth_range(PassFolder.open(tmp_path))


# ------------------------------------------------------------------------------------------------------------------
# Normals


def test_normal_control_convention_with_identity_camera():
    scene = SyntheticScene(frames=1, width=32, height=24)
    fp_normal = scene.normal_world(1)
    bg = scene.sky_mask()
    c = normals_to_control(fp_normal, np.eye(4), background=bg)
    wall = ~scene.floor_mask() & ~bg
    np.testing.assert_allclose(c[wall], np.broadcast_to([0.5, 0.5, 1.0], (wall.sum(), 3)))  # facing the camera
    floor = scene.floor_mask()
    np.testing.assert_allclose(c[floor], np.broadcast_to([0.5, 1.0, 0.5], (floor.sum(), 3)))  # facing up
    np.testing.assert_allclose(c[bg], np.broadcast_to([0.5, 0.5, 1.0], (bg.sum(), 3)))  # empty space: flat


def test_normal_control_is_in_camera_space():
    """Camera turned 90 deg about +Y (now looking down world -X): world +Z faces its left, world +X faces it, world -X faces away."""
    camera_to_world = _rot_y(90.0)
    world_to_camera = np.linalg.inv(camera_to_world)
    n = np.array([[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]])
    np.testing.assert_allclose(camera_space_normals(n, world_to_camera)[0],
                               [[-1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, -1]], atol=1e-12)
    c = normals_to_control(n, world_to_camera)
    np.testing.assert_allclose(c[0], [[1.0, 0.5, 0.5], [0.5, 0.5, 1.0], [0.5, 1.0, 0.5], [0.5, 0.5, 0.0]], atol=1e-6)
    # the same normals under the identity camera give different colours: the control depends on the camera
    assert not np.allclose(normals_to_control(n, np.eye(4)), c)
    # ControlNet 1.0 (midas) order: the same values, channels reversed
    np.testing.assert_allclose(normals_to_control(n, world_to_camera, convention="midas"), c[..., ::-1])


def test_normal_control_handles_scaled_cameras_and_zero_normals():
    m = np.diag([2.0, 2.0, 2.0, 1.0])  # a scaled camera object: normals must still come out unit length
    n = np.array([[[0.0, 0.6, 0.8], [0.0, 0.0, 0.0]]])
    c = normals_to_control(n, m)
    np.testing.assert_allclose(c[0, 0], [0.5, 0.8, 0.9], atol=1e-6)
    np.testing.assert_allclose(c[0, 1], [0.5, 0.5, 1.0])


# ------------------------------------------------------------------------------------------------------------------
# Edges


def _scene_depth(scene, f):
    z = scene.depth(f).astype(np.float64)
    z[z >= 1e9] = np.inf
    return z


@pytest.mark.parametrize("frame", [1, 4, 8])
def test_edges_lie_on_the_square_silhouette(frame):
    scene = SyntheticScene(frames=8, width=64, height=48, motion=(1.5, 0.5))
    e = geometric_edges(_scene_depth(scene, frame), scene.normal_world(frame), scene.object_index(frame))
    assert e.dtype == np.float32 and e.min() >= 0 and e.max() <= 1
    truth = scene.square_boundary(frame)
    near = np.zeros_like(truth)  # the neighbourhood of the square (other scene lines are elsewhere)
    x0, y0, x1, y1 = scene.square_box(frame)
    near[max(0, int(y0) - 2): int(y1) + 3, max(0, int(x0) - 2): int(x1) + 3] = True
    lines = (e > 0.5) & near
    iou = (lines & truth).sum() / (lines | truth).sum()
    assert iou > 0.85, iou
    assert e[truth].mean() > 0.9
    inside = scene.square_mask(frame).copy()
    inside[np.nonzero(truth)] = False
    interior = inside & ~np.roll(truth, 1, 0) & ~np.roll(truth, -1, 0) & ~np.roll(truth, 1, 1) & ~np.roll(truth, -1, 1)
    assert e[interior].max() < 0.05


def test_no_false_edges_on_a_slanted_floor_but_a_crease_line():
    scene = SyntheticScene(frames=1, width=64, height=48)
    z = _scene_depth(scene, 1)
    depth_only = geometric_edges(z)
    floor_rows = slice(scene.floor_top + 2, 48)
    assert depth_only[floor_rows].max() < 0.05  # inverse depth is affine on a plane: no lines
    with_normals = geometric_edges(z, scene.normal_world(1))
    assert with_normals[scene.floor_top].min() > 0.9  # the wall/floor crease (90 degrees)


def test_object_index_boundary_at_equal_depth():
    z = np.full((10, 12), 5.0)
    n = np.zeros((10, 12, 3))
    n[..., 2] = 1.0
    idx = np.zeros((10, 12), np.int32)
    idx[:, 6:] = 1
    assert geometric_edges(z, n).max() < 0.05
    e = geometric_edges(z, n, idx)
    assert e[:, 5].min() > 0.9 and e[:, :4].max() < 0.05 and e[:, 8:].max() < 0.05


# ------------------------------------------------------------------------------------------------------------------
# Savitzky-Golay


def test_savgol_reduces_jitter_and_keeps_a_ramp():
    rng = np.random.default_rng(1)
    t = np.arange(40, dtype=np.float64)
    ramp = 3.0 + 0.25 * t
    np.testing.assert_allclose(savgol_smooth(ramp, 7, 2), ramp, atol=1e-9)
    quad = 0.01 * t**2 - t
    np.testing.assert_allclose(savgol_smooth(quad, 7, 2), quad, atol=1e-9)
    jittered = ramp + rng.normal(scale=0.5, size=t.shape)
    before = np.abs(jittered - ramp).mean()
    after = np.abs(savgol_smooth(jittered, 7, 2) - ramp).mean()
    assert after < 0.7 * before, (before, after)
    two_d = np.stack([jittered, 2 * jittered], -1)
    np.testing.assert_allclose(savgol_smooth(two_d, 7)[:, 1], 2 * savgol_smooth(jittered, 7))


def test_savgol_short_series_and_bad_windows():
    v = np.array([1.0, 5.0, 2.0, 8.0])
    np.testing.assert_allclose(savgol_smooth(v, 7, 2), savgol_smooth(v, 3, 2))  # shrunk to 3
    np.testing.assert_array_equal(savgol_smooth(v[:2], 7, 2), v[:2])  # too short to fit: unchanged
    with pytest.raises(ValueError):
        savgol_smooth(v, 4)


def test_per_frame_depth_ranges(leaving):
    scene, pf = leaving
    fixed = per_frame_depth_ranges(pf, 0)
    assert set(fixed) == set(pf.frames) and len(set(fixed.values())) == 1
    raw = np.array([foreground_range(pf.read(f).depth) for f in pf.frames])
    smooth = per_frame_depth_ranges(pf, 5)
    got = np.array([smooth[f] for f in pf.frames])
    np.testing.assert_allclose(got[:, 0], savgol_smooth(raw[:, 0], 5, 2))
    assert np.all(got[:, 1] > got[:, 0]) and np.all(got[:, 0] > 0)
    # smoothing really changed the near series (the jump when the square leaves is softened)
    assert np.abs(np.diff(got[:, 0])).max() < np.abs(np.diff(raw[:, 0])).max()


def test_per_frame_depth_ranges_read_each_frame_once(leaving, monkeypatch):
    _, opened = leaving
    expected = per_frame_depth_ranges(opened, 5)
    pf = type(opened).open(opened.path)  # a fresh folder: the pre-pass of the first one is kept on it
    monkeypatch.setattr(pf.manifest, "depth_range", None)  # the shot range then comes from a pre-pass too
    reads = []
    real_read = pf.read
    monkeypatch.setattr(pf, "read", lambda f: reads.append(f) or real_read(f))
    got = per_frame_depth_ranges(pf, 5)
    assert sorted(reads) == sorted(pf.frames)  # one pre-pass serves both the shot range and the series
    assert got.keys() == expected.keys() and all(np.isfinite(got[f]).all() for f in got)
    per_frame_depth_ranges(pf, 0)
    ControlBuilder(pf, ["depth", "edges"], 32, 24)
    assert sorted(reads) == sorted(pf.frames)  # the validation pre-pass and the shot range share that one read


# ------------------------------------------------------------------------------------------------------------------
# Builder


@pytest.mark.parametrize("size", [(32, 24), (96, 72), (56, 40)])
def test_builder_images_at_render_size(leaving, size):
    _, pf = leaving
    b = ControlBuilder(pf, ["depth", "normal", "edges"], *size)
    images = b.images(2)
    assert list(images) == ["depth", "normal", "edges"]
    for img in images.values():
        assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == size
    d = np.asarray(images["depth"])
    assert d.max() == 255 and d.min() == 0 and np.all(d[..., 0] == d[..., 2])


def test_builder_save_is_atomic_and_matches_images(leaving, tmp_path):
    _, pf = leaving
    b = ControlBuilder(pf, ["depth", "edges"], 32, 24)
    paths = b.save(3, tmp_path / "controls")
    assert [p.name for p in paths] == ["depth_0003.png", "edges_0003.png"]
    for p, (kind, img) in zip(paths, b.images(3).items()):
        np.testing.assert_array_equal(np.asarray(Image.open(p)), np.asarray(img))
    assert sorted(q.name for q in (tmp_path / "controls").iterdir()) == ["depth_0003.png", "edges_0003.png"]


def test_builder_rejects_bad_requests(tmp_path, leaving):
    _, pf = leaving
    with pytest.raises(InputError, match="'canny'"):
        ControlBuilder(pf, ["canny"], 64, 48)
    with pytest.raises(InputError, match="smoothing"):
        ControlBuilder(pf, ["depth"], 64, 48, depth_smoothing=4)
    SyntheticScene(frames=2, width=16, height=12, passes=("depth", "object_index")).write(tmp_path / "nonormal")
    bare = PassFolder.open(tmp_path / "nonormal")
    with pytest.raises(PassFolderError, match="no normal pass"):
        ControlBuilder(bare, ["normal"], 16, 12)
    edges = ControlBuilder(bare, ["edges", "depth"], 16, 12).arrays(1)  # edges work from depth (+ index) alone
    assert edges["edges"].max() > 0.9

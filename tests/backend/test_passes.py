"""Pass folders: multilayer EXR as Blender writes it, up-front validation, per-frame reads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neurender.contract import PASS_FILE_PATTERN, PassManifest
from neurender.errors import PassFolderError
from neurender.passes.exr import exr_header_channels, exr_size, read_exr, write_multilayer_exr
from neurender.passes.folder import PassFolder

from support.synthetic_passes import FLOOR, SKY, SQUARE, WALL, SyntheticScene, write_synthetic_pass_folder

# Channel names exactly as Blender 4.5 writes a multilayer EXR with these passes enabled (BLENDER_NOTES).
BLENDER_45_CHANNELS = [
    "ViewLayer.Combined.R", "ViewLayer.Combined.G", "ViewLayer.Combined.B", "ViewLayer.Combined.A",
    "ViewLayer.Depth.Z",
    "ViewLayer.Normal.X", "ViewLayer.Normal.Y", "ViewLayer.Normal.Z",
    "ViewLayer.Vector.X", "ViewLayer.Vector.Y", "ViewLayer.Vector.Z", "ViewLayer.Vector.W",
    "ViewLayer.IndexOB.X",
]


def _manifest_dict(folder) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _write_manifest(folder, data: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(data))


@pytest.fixture
def shot(tmp_path):
    scene = SyntheticScene(frames=8, width=64, height=48, motion=(2.0, 1.0))
    scene.write(tmp_path / "shot")
    return scene, tmp_path / "shot"


# ------------------------------------------------------------------------------------------------------------------
# EXR I/O


def test_blender_45_multilayer_exr_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    h, w = 6, 10
    channels = {name: rng.normal(size=(h, w)).astype(np.float32) for name in BLENDER_45_CHANNELS}
    rows = np.repeat(np.arange(h, dtype=np.float32)[:, None], w, axis=1)
    channels["ViewLayer.Depth.Z"] = rows + 1.0  # row i holds i + 1: tells top-first from bottom-first
    path = tmp_path / "f.exr"
    write_multilayer_exr(path, channels)

    assert exr_size(path) == (w, h)
    assert sorted(exr_header_channels(path)) == sorted(BLENDER_45_CHANNELS)
    back = read_exr(path)
    assert sorted(back) == sorted(BLENDER_45_CHANNELS)
    for name in BLENDER_45_CHANNELS:
        assert back[name].dtype == np.float32 and back[name].shape == (h, w)
        np.testing.assert_array_equal(back[name], channels[name])
    assert back["ViewLayer.Depth.Z"][0, 0] == 1.0 and back["ViewLayer.Depth.Z"][-1, 0] == h


def test_uncompressed_exr_and_float16_input(tmp_path):
    z = np.linspace(0, 1, 12, dtype=np.float16).reshape(3, 4)
    write_multilayer_exr(tmp_path / "a.exr", {"ViewLayer.Depth.Z": z}, compression="none")
    np.testing.assert_array_equal(read_exr(tmp_path / "a.exr")["ViewLayer.Depth.Z"], z.astype(np.float32))


def test_blender_45_file_opens_as_a_pass_folder(tmp_path):
    """A hand-built folder (not the synthetic writer) with Blender 4.5 channel names and a minimal manifest."""
    h, w = 8, 12
    folder = tmp_path / "p"
    depth = np.full((h, w), 1e10, np.float32)
    depth[2:6, 3:9] = 3.5
    channels = {name: np.zeros((h, w), np.float32) for name in BLENDER_45_CHANNELS}
    channels["ViewLayer.Depth.Z"] = depth
    channels["ViewLayer.IndexOB.X"][2:6, 3:9] = 7.0
    write_multilayer_exr(folder / "passes_0010.exr", channels)
    _write_manifest(folder, {
        "schema_version": 1, "frame_start": 10, "frame_end": 10, "fps": 24, "width": w, "height": h,
        "clip_start": 0.1, "clip_end": 1000.0,
        "passes": {"depth": "ViewLayer.Depth", "normal": "ViewLayer.Normal", "vector": "ViewLayer.Vector",
                   "object_index": "ViewLayer.IndexOB", "combined": "ViewLayer.Combined"},
        "frames": [{"frame": 10, "file": "passes_0010.exr"}],
    })
    pf = PassFolder.open(folder)
    fp = pf.read(10)
    assert np.isinf(fp.depth).sum() == h * w - 24 and np.all(fp.depth[2:6, 3:9] == 3.5)
    assert fp.object_index.dtype == np.int32 and set(np.unique(fp.object_index)) == {0, 7}
    assert fp.vector.shape == (h, w, 4) and fp.normal.shape == (h, w, 3) and fp.combined.shape == (h, w, 3)
    assert fp.camera is None


# ------------------------------------------------------------------------------------------------------------------
# Reading


def test_open_selects_frames_and_reads_exact_passes(shot):
    scene, folder = shot
    pf = PassFolder.open(folder, frames=(3, 5))
    assert pf.frames == [3, 4, 5] and (pf.width, pf.height) == (64, 48)
    fp = pf.read(4)
    sky, square = scene.sky_mask(), scene.square_mask(4)
    assert np.all(np.isinf(fp.depth[sky])) and np.all(np.isfinite(fp.depth[~sky]))
    assert np.all(fp.depth[square] == 4.0)
    np.testing.assert_array_equal(fp.object_index, scene.object_index(4))
    assert set(np.unique(fp.object_index)) == {SKY, WALL, FLOOR, SQUARE}
    np.testing.assert_array_equal(fp.vector[square], np.broadcast_to([-2.0, 1.0, -2.0, 1.0], (square.sum(), 4)))
    assert np.all(fp.vector[~square] == 0)
    floor = scene.floor_mask() & ~square
    np.testing.assert_allclose(fp.normal[floor], np.broadcast_to([0.0, 1.0, 0.0], (floor.sum(), 3)))
    assert fp.combined.shape == (48, 64, 3) and fp.combined.dtype == np.float32
    assert fp.camera is not None and fp.camera.fx == 64.0 and fp.camera.cy == 24.0


def test_vector_pass_follows_blender_convention(shot):
    """Image-space flow t->t+1 = (-V.z, +V.w) and t->t-1 = (V.x, -V.y) must move the square onto its next/prev mask."""
    scene, folder = shot
    pf = PassFolder.open(folder)
    for f in (2, 5):
        v = pf.read(f).vector
        mask = scene.square_mask(f)
        ys, xs = np.nonzero(mask)
        fwd = np.stack([-v[ys, xs, 2], v[ys, xs, 3]], -1)
        bwd = np.stack([v[ys, xs, 0], -v[ys, xs, 1]], -1)
        nxt = np.zeros_like(mask)
        nxt[(ys + fwd[:, 1]).astype(int), (xs + fwd[:, 0]).astype(int)] = True
        prv = np.zeros_like(mask)
        prv[(ys + bwd[:, 1]).astype(int), (xs + bwd[:, 0]).astype(int)] = True
        np.testing.assert_array_equal(nxt, scene.square_mask(f + 1))
        np.testing.assert_array_equal(prv, scene.square_mask(f - 1))


def test_background_values_become_inf(tmp_path):
    """+inf, Cycles' 1e10 and EEVEE's just-beyond-clip-end value are all background; real depth stays."""
    scene = SyntheticScene(frames=1, width=16, height=12, clip_end=1000.0)
    scene.write(tmp_path)
    ch = scene.channels(1)
    z = ch["ViewLayer.Depth.Z"]
    z[0, 0], z[0, 1], z[0, 2], z[0, 3] = np.inf, 1e10, 1000.55, 999.0
    write_multilayer_exr(tmp_path / PASS_FILE_PATTERN.format(frame=1), ch)
    d = PassFolder.open(tmp_path).read(1).depth
    assert np.isinf(d[0, :3]).all() and d[0, 3] == 999.0


def test_blender_50_object_index_name(tmp_path):
    SyntheticScene(frames=2, width=16, height=12, object_index_name="Object Index").write(tmp_path / "a")
    assert PassFolder.open(tmp_path / "a").manifest.passes["object_index"] == "ViewLayer.Object Index"
    # a 4.5-style manifest prefix with 5.0 channel names (or the reverse) is accepted too
    data = _manifest_dict(tmp_path / "a")
    data["passes"]["object_index"] = "ViewLayer.IndexOB"
    _write_manifest(tmp_path / "a", data)
    idx = PassFolder.open(tmp_path / "a").read(2).object_index
    assert idx.max() == SQUARE


# ------------------------------------------------------------------------------------------------------------------
# Validation errors


def _err(folder, frames=None) -> str:
    with pytest.raises(PassFolderError) as info:
        PassFolder.open(folder, frames=frames)
    return str(info.value)


def test_missing_folder_and_manifest(tmp_path):
    assert "does not exist" in _err(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    msg = _err(tmp_path / "empty")
    assert "manifest.json is missing" in msg and "empty" in msg


def test_bad_json_manifest(shot):
    _, folder = shot
    (folder / "manifest.json").write_text("{not json")
    msg = _err(folder)
    assert "manifest.json" in msg and "not valid JSON" in msg


def test_unknown_schema_version(shot):
    _, folder = shot
    data = _manifest_dict(folder)
    data["schema_version"] = 99
    _write_manifest(folder, data)
    msg = _err(folder)
    assert "schema version 99" in msg and "manifest.json" in msg


def test_malformed_manifest_field(shot):
    _, folder = shot
    data = _manifest_dict(folder)
    del data["width"]
    _write_manifest(folder, data)
    assert "malformed" in _err(folder)


def test_missing_frame_files_are_listed(shot):
    _, folder = shot
    for f in (2, 4, 6):
        (folder / PASS_FILE_PATTERN.format(frame=f)).unlink()
    msg = _err(folder)
    assert "3 of 8 frame files are missing" in msg
    assert "passes_0002.exr, passes_0004.exr, passes_0006.exr" in msg
    # a subset that avoids the holes opens fine
    assert PassFolder.open(folder, frames=(7, 8)).frames == [7, 8]


def test_many_missing_frames_are_abbreviated(tmp_path):
    scene = SyntheticScene(frames=9, width=8, height=8)
    scene.write(tmp_path, frames=[1])
    msg = _err(tmp_path)
    assert "8 of 9" in msg and "and 3 more" in msg


def test_exr_size_differs_from_manifest(shot):
    _, folder = shot
    other = SyntheticScene(frames=8, width=32, height=24)
    write_multilayer_exr(folder / PASS_FILE_PATTERN.format(frame=3), other.channels(3))
    msg = _err(folder)
    assert "frame 3" in msg and "32x24" in msg and "64x48" in msg


def test_missing_required_channels(shot):
    scene, folder = shot
    ch = {k: v for k, v in scene.channels(5).items() if ".Normal." not in k}
    write_multilayer_exr(folder / PASS_FILE_PATTERN.format(frame=5), ch)
    msg = _err(folder)
    assert "frame 5" in msg and "normal" in msg and "ViewLayer.Normal.X" in msg


def test_garbage_exr_fails_at_open(shot):
    _, folder = shot
    (folder / PASS_FILE_PATTERN.format(frame=2)).write_bytes(b"this is not an EXR file" * 20)
    msg = _err(folder)
    assert "passes_0002.exr" in msg and "not a readable OpenEXR file" in msg


def test_truncated_exr_fails_on_read_naming_the_frame(shot):
    _, folder = shot
    path = folder / PASS_FILE_PATTERN.format(frame=6)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    pf = PassFolder.open(folder)  # the header is intact: cheap validation cannot see this
    pf.read(5)
    with pytest.raises(PassFolderError) as info:
        pf.read(6)
    assert "frame 6" in str(info.value) and "corrupt or truncated" in str(info.value)


@pytest.mark.parametrize("bad", [np.nan, -np.inf, -1.0])
def test_bad_depth_is_reported_with_frame_and_count(shot, bad):
    scene, folder = shot
    ch = scene.channels(4)
    ch["ViewLayer.Depth.Z"][20:22, 30:33] = bad  # 6 pixels
    write_multilayer_exr(folder / PASS_FILE_PATTERN.format(frame=4), ch)
    pf = PassFolder.open(folder)
    with pytest.raises(PassFolderError) as info:
        pf.read(4)
    assert "frame 4" in str(info.value) and "has 6 depth pixels" in str(info.value)


def test_requested_range_outside_the_shot(shot):
    _, folder = shot
    msg = _err(folder, frames=(5, 12))
    assert "5-12" in msg and "outside" in msg and "1-8" in msg
    assert "empty" in _err(folder, frames=(5, 4))
    pf = PassFolder.open(folder, frames=(2, 3))
    with pytest.raises(PassFolderError, match="frame 7"):
        pf.read(7)


def test_manifest_round_trip_from_writer(tmp_path):
    m = write_synthetic_pass_folder(tmp_path, frames=3, width=16, height=12, with_depth_range=True)
    back = PassManifest.from_json((tmp_path / "manifest.json").read_text())
    assert back == m and back.depth_range == SyntheticScene(frames=3, width=16, height=12).depth_range()

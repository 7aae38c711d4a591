"""The pass folder written by the add-on: manifest, shot-wide depth range, cameras vs. depth/normal/vector passes.

The checks tie the passes together through the manifest's cameras: pixels are lifted to 3D with the depth pass
and the manifest's intrinsics + world_to_camera, then (a) the cube's pixels, moved back by its known keyframed
motion and reprojected, must match the vector pass; (b) the sphere's points must have the analytic normal in the
normal pass. Any error in intrinsics, lens shift, matrix convention or pass layout breaks them.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import run_blender_scenario
from exr_io import channels

FRAMES = 5


@pytest.fixture(scope="module")
def exported(addon_zip, tmp_path_factory):
    result = run_blender_scenario("export_passes", tmp_path_factory.mktemp("export"), addon_zip, 240, frames=FRAMES)
    with open(os.path.join(result["pass_dir"], "manifest.json"), encoding="utf-8") as f:
        result["manifest"] = json.load(f)
    return result


def _contract():
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "backend", "neurender"))
    import contract

    return contract


def _index_channel(manifest) -> str:
    """The object index channel named by the manifest ('IndexOB' in 4.5, 'Object Index' in 5.0)."""
    return manifest["passes"]["object_index"] + ".X"


def _lift(depth, cam):
    """Camera-space and world-space points of every pixel centre (y down image -> camera +Y up, looking down -Z)."""
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w] + 0.5
    x = (u - cam["cx"]) / cam["fx"] * depth
    y = -(v - cam["cy"]) / cam["fy"] * depth
    pc = np.stack([x, y, -depth, np.ones_like(depth)], -1)
    c2w = np.linalg.inv(np.array(cam["world_to_camera"]))
    return pc, pc @ c2w.T


def _project(pw, cam):
    pc = pw @ np.array(cam["world_to_camera"]).T
    d = -pc[..., 2]
    return cam["cx"] + cam["fx"] * pc[..., 0] / d, cam["cy"] - cam["fy"] * pc[..., 1] / d


def _interior(mask):
    m = mask.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            m &= np.roll(np.roll(mask, dy, 0), dx, 1)
    return m


def test_manifest_is_valid_and_complete(exported):
    contract = _contract()
    m = contract.PassManifest.from_dict(exported["manifest"])  # runs check()
    assert m.frame_numbers == list(range(1, FRAMES + 1))
    assert (m.width, m.height) == (64, 48)
    for entry in m.frames:
        assert os.path.isfile(os.path.join(exported["pass_dir"], entry.file))
        assert entry.camera is not None
    assert m.passes["depth"] == "ViewLayer.Depth"
    # the Blender version's own names and EXR layout: 4.5 one part with IndexOB, 5.0 one part per pass
    from importlib.metadata import version

    from exr_io import part_count

    major = int(version("bpy").split(".")[0])
    parts = part_count(os.path.join(exported["pass_dir"], m.frames[0].file))
    if major >= 5:
        assert m.passes["object_index"] == "ViewLayer.Object Index" and parts == 5
    else:
        assert m.passes["object_index"] == "ViewLayer.IndexOB" and parts == 1
    assert exported["generator"].startswith(f"neurender-blender {major}.")
    # the artist's render output is restored after the export
    assert exported["file_format"] != "OPEN_EXR_MULTILAYER"
    assert "passes_" not in exported["render_filepath"]


def test_depth_range_is_shot_wide_and_contains_all_depth(exported):
    m = exported["manifest"]
    near, far = m["depth_range"]
    assert m["clip_start"] < near < far < m["clip_end"]  # from geometry, not just the clip range
    lo, hi = np.inf, -np.inf
    for entry in m["frames"]:
        z = channels(os.path.join(exported["pass_dir"], entry["file"]))["ViewLayer.Depth.Z"]
        finite = z[z < 1e9]
        lo, hi = min(lo, finite.min()), max(hi, finite.max())
    assert near - 1e-3 <= lo and hi <= far + 1e-3, (lo, hi, near, far)
    # and it is tight: bounding boxes overshoot the visible depth only a little
    assert far - near < 1.1 * (hi - lo), (near, far, lo, hi)


def test_vector_pass_matches_known_motion_through_manifest_cameras(exported):
    m = exported["manifest"]
    step = np.array(exported["cube_step"] + [0.0])
    errors, moved = [], []
    for entry in m["frames"][1:]:  # frame f vs f-1
        ch = channels(os.path.join(exported["pass_dir"], entry["file"]))
        cam = entry["camera"]
        mask = _interior(np.abs(ch[_index_channel(m)] - 1) < 0.01)
        assert mask.sum() > 20
        _, pw = _lift(ch["ViewLayer.Depth.Z"], cam)
        u0, v0 = _project(pw, cam)
        u1, v1 = _project(pw - step, cam)  # where the cube's surface point was one frame earlier
        flow_prev = np.stack([ch["ViewLayer.Vector.X"], -ch["ViewLayer.Vector.Y"]], -1)  # image coords, t -> t-1
        expected = np.stack([u1 - u0, v1 - v0], -1)
        errors.append(np.linalg.norm(flow_prev[mask] - expected[mask], axis=-1))
        moved.append(np.linalg.norm(expected[mask], axis=-1))
        floor = _interior(np.abs(ch[_index_channel(m)] - 2) < 0.01)
        assert np.median(np.abs(flow_prev[floor])) < 0.02  # static floor, static camera
    err = np.concatenate(errors)
    assert np.median(np.concatenate(moved)) > 2.0  # the motion is real (pixels)
    assert np.median(err) < 0.1, np.median(err)
    assert np.percentile(err, 90) < 0.3


def test_world_normals_agree_with_cameras_and_depth(exported):
    m = exported["manifest"]
    entry = m["frames"][0]
    ch = channels(os.path.join(exported["pass_dir"], entry["file"]))
    cam = entry["camera"]
    mask = _interior(np.abs(ch[_index_channel(m)] - 3) < 0.01)
    assert mask.sum() > 20
    _, pw = _lift(ch["ViewLayer.Depth.Z"], cam)
    expected = pw[..., :3] - np.array(exported["sphere_center"])
    expected /= np.linalg.norm(expected, axis=-1, keepdims=True)
    normal = np.stack([ch["ViewLayer.Normal.X"], ch["ViewLayer.Normal.Y"], ch["ViewLayer.Normal.Z"]], -1)
    cos = np.sum(normal[mask] * expected[mask], -1)
    # the sphere covers ~10 px, so one pixel's filtered normal spans several degrees
    assert np.median(np.degrees(np.arccos(np.clip(cos, -1, 1)))) < 8.0
    # in camera space (the backend's conversion) visible normals face the camera (+Z)
    rot = np.array(cam["world_to_camera"])[:3, :3]
    n_cam = normal[mask] @ rot.T
    assert np.mean(n_cam[:, 2] > 0) > 0.97

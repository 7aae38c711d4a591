"""Pure camera math of the add-on (no bpy): intrinsics, rigid inverse, projection, depth range."""

import math

import numpy as np
import pytest

from addon_modules import load

cm = load("camera_math")


def test_default_camera_intrinsics():
    # Blender's default camera: 50 mm lens, 36 mm sensor, AUTO fit; 1920x1080
    fx, fy, cx, cy = cm.intrinsics(lens_mm=50, sensor_width_mm=36, sensor_height_mm=24, sensor_fit="AUTO",
                                   width=1920, height=1080)
    assert fx == pytest.approx(50 / 36 * 1920) and fy == pytest.approx(fx)
    assert (cx, cy) == (960, 540)


def test_auto_fit_portrait_uses_sensor_width_on_height():
    fx, fy, _, _ = cm.intrinsics(lens_mm=50, sensor_width_mm=36, sensor_height_mm=24, sensor_fit="AUTO",
                                 width=600, height=800)
    assert fy == pytest.approx(50 / 36 * 800) and fx == pytest.approx(fy)


def test_vertical_fit_and_pixel_aspect():
    fx, fy, _, _ = cm.intrinsics(lens_mm=35, sensor_width_mm=36, sensor_height_mm=24, sensor_fit="VERTICAL",
                                 width=640, height=480, pixel_aspect_x=2.0, pixel_aspect_y=1.0)
    # vertical fit: 24 mm spans the height; a pixel twice as wide covers twice the angle horizontally
    assert fy == pytest.approx(35 / 24 * 480)
    assert fx == pytest.approx(fy / 2.0)


def test_shift_moves_principal_point_against_the_shift():
    _, _, cx, cy = cm.intrinsics(lens_mm=50, sensor_width_mm=36, sensor_height_mm=24, sensor_fit="AUTO",
                                 width=200, height=100, shift_x=0.1, shift_y=0.2)
    assert cx == pytest.approx(100 - 0.1 * 200)  # shift is a fraction of the larger dimension
    assert cy == pytest.approx(50 + 0.2 * 200)


def test_rigid_inverse_ignores_scale_and_roundtrips():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    m = np.eye(4)
    m[:3, :3] = q * np.array([2.0, 2.0, 2.0])  # a scaled camera object
    m[:3, 3] = [1.0, -2.0, 3.0]
    inv = np.array(cm.rigid_inverse(m.tolist()))
    unscaled = m.copy()
    unscaled[:3, :3] = q
    np.testing.assert_allclose(inv @ unscaled, np.eye(4), atol=1e-12)


def test_project_point_in_front_of_identity_camera():
    w2c = np.eye(4).tolist()
    u, v, d = cm.project(w2c, 100.0, 100.0, 32.0, 24.0, (1.0, 0.5, -2.0))
    assert d == 2.0 and u == pytest.approx(32 + 50) and v == pytest.approx(24 - 25)  # y down in the image


def test_depth_range_clamps_and_ignores_points_behind():
    assert cm.depth_range([-3.0, 0.05, 2.0, 500.0, math.inf], 0.1, 100.0) == (0.1, 100.0)
    assert cm.depth_range([4.0, 7.5, 5.0], 0.1, 100.0) == (4.0, 7.5)
    assert cm.depth_range([-1.0], 0.1, 100.0) == (0.1, 100.0)  # nothing in front: the clip range
    near, far = cm.depth_range([3.0, 3.0], 0.1, 100.0)
    assert near < far


def _cam():
    return (100.0, 100.0, 32.0, 24.0), 64, 48


def test_visible_box_depths_of_a_box_in_view():
    intr, w, h = _cam()
    # unit cube centred 5 units in front of an identity camera: depths 4.5 .. 5.5
    m = np.eye(4)
    m[2, 3] = -5.0
    lo, hi = cm.visible_box_depths(m.tolist(), (-0.5, -0.5, -0.5), (0.5, 0.5, 0.5), intr, w, h, 0.1, 100.0)
    assert lo == pytest.approx(4.5) and hi == pytest.approx(5.5)


def test_visible_box_depths_ignores_boxes_outside_and_clips_large_ones():
    intr, w, h = _cam()
    m = np.eye(4)
    m[0, 3], m[2, 3] = 50.0, -5.0  # far to the right: outside the view
    assert cm.visible_box_depths(m.tolist(), (-0.5,) * 3, (0.5,) * 3, intr, w, h, 0.1, 100.0) is None
    # a flat floor 1 unit below the camera, from 20 units behind to 200 in front: only the seen part counts
    floor = np.eye(4)
    floor[1, 3] = -1.0
    lo, hi = cm.visible_box_depths(floor.tolist(), (-100, 0, -200), (100, 0, 20), intr, w, h, 0.1, 100.0)
    # the lowest image row (v = 48) sees the floor at depth fy * 1 / (48 - cy) = 100 / 24
    assert lo == pytest.approx(100 / 24, rel=1e-6)
    assert hi == pytest.approx(100.0)  # clipped by the far plane

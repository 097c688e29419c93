"""Easy / Hard / Junk from geometry, on constructed views whose answer is known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bitseek.data.embedded.landmarks.geometry import (JUNK_SIDE, apply_homography, homography_from_points,
                                                      label_pair, pair_geometry, view_homography)

SIZE = (200, 100)
BOX = (50.0, 25.0, 150.0, 75.0)  # 100 x 50 box in the middle of the query image


def _view(scale: float = 1.0, shift=(0.0, 0.0), rot_deg: float = 0.0, size=SIZE, jitter=None) -> np.ndarray:
    """Image -> world of a ``size`` view: world = rotate/scale about the image centre, then shift."""
    w, h = size
    c = np.array([w / 2, h / 2])
    t = math.radians(rot_deg)
    r = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]) * scale
    img = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    world = (img - c) @ r.T + np.array([100.0, 50.0]) + np.asarray(shift)
    if jitter is not None:
        world = world + np.asarray(jitter)
    return view_homography(size, world)


Q = _view()


def test_homography_maps_the_four_points():
    src = np.array([[0, 0], [10, 0], [10, 5], [0, 5]], dtype=np.float64)
    dst = np.array([[1, 2], [12, 1], [11, 8], [0, 7]], dtype=np.float64)
    h = homography_from_points(src, dst)
    assert np.allclose(apply_homography(h, src), dst)
    assert h[2, 2] == 1.0


def test_identical_view_is_easy():
    g = pair_geometry(Q, BOX, Q, SIZE)
    assert g.visible == 1.0 and g.scale == pytest.approx(1.0) and g.anisotropy == pytest.approx(1.0)
    assert label_pair(g) == "easy"


def test_no_overlap_is_negative():
    g = pair_geometry(Q, BOX, _view(shift=(0.0, 300.0)), SIZE)
    assert g.visible == 0.0 and label_pair(g) == "negative"


def test_a_sliver_is_junk_but_not_negative():
    # the database frame starts 10 px before the box's right edge: 10 % of the box is visible
    g = pair_geometry(Q, BOX, _view(shift=(140.0, 0.0)), SIZE)
    assert 0.0 < g.visible < 0.25
    assert label_pair(g) == "junk"


def test_half_occluded_box_is_hard_small_occlusion_easy():
    mask = np.zeros((SIZE[1], SIZE[0]), dtype=bool)
    mask[:, 100:] = True  # right half of the box hidden
    g = pair_geometry(Q, BOX, Q, SIZE, mask)
    assert g.visible == pytest.approx(0.5) and label_pair(g) == "hard"
    small = np.zeros_like(mask)
    small[25:75, 140:150] = True  # 10 % of the box
    g = pair_geometry(Q, BOX, Q, SIZE, small)
    assert g.visible == pytest.approx(0.9, abs=0.02) and label_pair(g) == "easy"  # 64-point lattice


def test_strong_zoom_out_is_hard_extreme_is_junk():
    g = pair_geometry(Q, BOX, _view(scale=3.0), SIZE)  # three times as many world pixels per image pixel
    assert g.visible == 1.0 and g.scale == pytest.approx(1 / 3) and label_pair(g) == "hard"
    g = pair_geometry(Q, BOX, _view(scale=12.0), SIZE)
    assert g.side_rel < JUNK_SIDE and label_pair(g) == "junk"


def test_zoom_in_crops_the_box():
    g = pair_geometry(Q, BOX, _view(scale=0.5), SIZE)  # the frame shows the central 100 x 50 world pixels
    assert g.visible == pytest.approx(1.0) and g.scale == pytest.approx(2.0)
    assert label_pair(g) == "hard"  # 2x zoom: beyond the Easy scale band
    g = pair_geometry(Q, BOX, _view(scale=0.7), SIZE)
    assert label_pair(g) == "easy"


def test_rotation_perspective_and_photometry_make_it_hard():
    g = pair_geometry(Q, BOX, _view(rot_deg=30.0, scale=0.8), SIZE)
    assert g.rotation_deg == pytest.approx(-30.0, abs=1e-6) or g.rotation_deg == pytest.approx(30.0, abs=1e-6)
    assert label_pair(g) == "hard"
    g = pair_geometry(Q, BOX, _view(rot_deg=5.0, scale=0.8), SIZE)
    assert label_pair(g) == "easy"
    keystone = np.array([[-100, 0], [100, 0], [20, 0], [-20, 0]], dtype=np.float64)  # top wide, bottom narrow
    g = pair_geometry(Q, BOX, _view(scale=1.2, jitter=keystone), SIZE)
    assert g.visible > 0.7 and (g.anisotropy > 1.3 or g.scale_spread > 1.4)
    assert label_pair(g) == "hard"
    g = pair_geometry(Q, BOX, Q, SIZE)
    assert label_pair(g, photometric_severe=True) == "hard"


def test_mask_is_indexed_row_major():
    mask = np.zeros((SIZE[1], SIZE[0]), dtype=bool)
    mask[25:50, :] = True  # top half of the box (rows), all columns
    g = pair_geometry(Q, BOX, Q, SIZE, mask)
    assert g.visible == pytest.approx(0.5)

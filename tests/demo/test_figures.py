"""The retrieval grid: square clip tiles, page width whatever the column count, distances in captions."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from bitseek.demo.figures import plot_retrievals, tile_frames
from bitseek.errors import InputError


def _png_size(path):
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_tile_frames_is_square_with_gaps():
    clip = np.stack([np.full((8, 8), v, np.uint8) for v in range(10, 210, 10)])  # 20 frames
    tile = tile_frames(clip, 4, gap=2)
    assert tile.shape == (18, 18) and tile.dtype == np.uint8
    assert tile[0, 0] == 10 and tile[0, 10] == clip[6, 0, 0] and tile[10, 0] == clip[13, 0, 0]
    assert tile[10, 10] == 200 and (tile[8:10] == 255).all()  # last frame, white gap between rows
    assert tile_frames(clip[:1], 4).shape == (8, 8)  # a one-frame clip is one frame
    with pytest.raises(InputError):
        tile_frames(np.zeros((8, 8), np.uint8))


@pytest.mark.parametrize("top", [5, 10])
def test_grid_is_page_wide_and_captions_carry_distances(tmp_path, top, monkeypatch):
    rng = np.random.default_rng(0)
    clip = lambda: (rng.random((20, 32, 32)) * 255).astype(np.uint8)  # noqa: E731
    queries = [clip() for _ in range(3)]
    results = [[clip() for _ in range(top)] for _ in range(3)]
    relevant = [[i % 2 == 0 for i in range(top)] for _ in range(3)]
    dists = [[float(i) for i in range(top)] for _ in range(3)]
    titles = []

    import matplotlib.axes

    real = matplotlib.axes.Axes.set_title
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title",
                        lambda self, label, *a, **kw: (titles.append((label, kw.get("fontsize"))), real(self, label, *a, **kw))[1])
    path = plot_retrievals(tmp_path / "grid.png", queries, results, relevant, ["q"] * 3, [["x"] * top] * 3,
                           distances=dists)
    w, h = _png_size(path)
    assert 900 <= w <= 1300, w  # the old layout grew with the columns (3,406 px for 5 + 1)
    captions = [t for t, _ in titles if t.startswith("#")]
    assert captions[:3] == ["#1  d=0\nx", "#2  d=1\nx", "#3  d=2\nx"]
    assert min(size for _, size in titles) >= 8
    with pytest.raises(InputError, match="one distance per result"):
        plot_retrievals(tmp_path / "bad.png", queries, results, relevant, ["q"] * 3, [["x"] * top] * 3,
                        distances=[[0.0]] * 3)

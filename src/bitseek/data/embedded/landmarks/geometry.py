"""Camera geometry of the re-photographed scenes and the Easy / Hard / Junk rule computed from it.

A scene is a real photograph treated as a planar world (its pixel coordinates). A *view* is the
homography ``H`` mapping image coordinates (``[0, w] x [0, h]``) to world coordinates; its frame is
a convex quadrilateral inside the photograph, so every pixel of a view shows real content.

Labels (Radenović et al., CVPR 2018, "Revisiting Oxford and Paris", §3; Oxford 5k's 25 % rule for
"too little to tell"). For a query (a view plus its box ``bbx``) and a database view of the same
scene, the query box is sampled on a ``GRID x GRID`` lattice in query pixels, each point is carried
through ``H_db^-1 . H_q`` into the database image, and it counts as *visible* when it lands inside
the frame and on no occluder. With ``v`` the visible fraction:

* **negative**: ``v == 0``. revisitop: an image with any physical overlap is never negative, so
  only a view that shows none of the box is (same-scene views of other regions included).
* **junk** ("unclear"): ``0 < v < JUNK_VISIBLE`` (less than a quarter of the box: Oxford 5k's junk
  rule), or the visible part is smaller than ``JUNK_SIDE`` of the database image's longer side
  (too few pixels to be sure which part of the box it is).
* **easy**: the box "clearly depicted, small viewpoint change, no significant occlusion, no extreme
  illumination change, no severe artefacts": ``v >= EASY_VISIBLE``, local scale within
  ``EASY_SCALE`` (either way), anisotropy (perspective foreshortening) at most ``EASY_ANISOTROPY``,
  in-plane rotation at most ``EASY_ROTATION_DEG``, scale varying across the box by at most
  ``EASY_SCALE_SPREAD``, and none of the database image's photometric changes severe.
* **hard**: everything else that shows at least a quarter of the box: the landmark is recognisable
  but under difficult viewing conditions (strong zoom, viewpoint, occlusion or illumination).

Scale, anisotropy and rotation come from the Jacobian of the query-to-database map at the centroid
of the visible points (its singular values and the rotation of its polar decomposition).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "EASY_ANISOTROPY",
    "EASY_ROTATION_DEG",
    "EASY_SCALE",
    "EASY_SCALE_SPREAD",
    "EASY_VISIBLE",
    "GRID",
    "JUNK_SIDE",
    "JUNK_VISIBLE",
    "PairGeometry",
    "apply_homography",
    "homography_from_points",
    "label_pair",
    "pair_geometry",
    "view_homography",
]

GRID = 64
JUNK_VISIBLE = 0.25
JUNK_SIDE = 0.10
EASY_VISIBLE = 0.70
EASY_SCALE = 1.8
EASY_ANISOTROPY = 1.3
EASY_ROTATION_DEG = 15.0
EASY_SCALE_SPREAD = 1.4


def homography_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 homography (``H[2, 2] = 1``) taking four ``src`` points onto four ``dst`` points."""
    src = np.asarray(src, dtype=np.float64).reshape(4, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(4, 2)
    a = np.zeros((8, 8))
    b = np.zeros(8)
    for i, ((x, y), (u, v)) in enumerate(zip(src, dst)):
        a[2 * i] = [x, y, 1, 0, 0, 0, -u * x, -u * y]
        a[2 * i + 1] = [0, 0, 0, x, y, 1, -v * x, -v * y]
        b[2 * i], b[2 * i + 1] = u, v
    h = np.linalg.solve(a, b)
    return np.append(h, 1.0).reshape(3, 3)


def apply_homography(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """``(n, 2)`` points mapped by ``h``; points sent to or behind infinity come back as NaN."""
    p = np.asarray(pts, dtype=np.float64)
    w = h[2, 0] * p[:, 0] + h[2, 1] * p[:, 1] + h[2, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        x = (h[0, 0] * p[:, 0] + h[0, 1] * p[:, 1] + h[0, 2]) / w
        y = (h[1, 0] * p[:, 0] + h[1, 1] * p[:, 1] + h[1, 2]) / w
    bad = ~(w > 1e-12)
    x[bad] = np.nan
    y[bad] = np.nan
    return np.stack([x, y], axis=1)


def view_homography(size: tuple[int, int], corners: np.ndarray) -> np.ndarray:
    """Image -> world homography of a ``(w, h)`` view whose frame corners (TL, TR, BR, BL) are ``corners``."""
    w, h = size
    return homography_from_points(np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64), corners)


def _grid(bbx: tuple[float, float, float, float], n: int) -> np.ndarray:
    x1, y1, x2, y2 = bbx
    xs = x1 + (np.arange(n) + 0.5) * (x2 - x1) / n
    ys = y1 + (np.arange(n) + 0.5) * (y2 - y1) / n
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def _jacobians(t: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """``(n, 2, 2)`` Jacobians of the homography ``t`` at ``pts``."""
    x, y = pts[:, 0], pts[:, 1]
    w = t[2, 0] * x + t[2, 1] * y + t[2, 2]
    u = (t[0, 0] * x + t[0, 1] * y + t[0, 2]) / w
    v = (t[1, 0] * x + t[1, 1] * y + t[1, 2]) / w
    j = np.empty((pts.shape[0], 2, 2))
    j[:, 0, 0] = (t[0, 0] - u * t[2, 0]) / w
    j[:, 0, 1] = (t[0, 1] - u * t[2, 1]) / w
    j[:, 1, 0] = (t[1, 0] - v * t[2, 0]) / w
    j[:, 1, 1] = (t[1, 1] - v * t[2, 1]) / w
    return j


@dataclass(frozen=True)
class PairGeometry:
    """What a database view shows of a query box: visible fraction and the local distortion there."""

    visible: float  # fraction of the query box's lattice visible in the database image
    scale: float  # sqrt(det J): database pixels per query pixel (linear), at the visible centroid
    anisotropy: float  # sigma_max / sigma_min of J: perspective foreshortening / shear
    rotation_deg: float  # in-plane rotation of J's polar factor, in (-180, 180]
    scale_spread: float  # max / min local linear scale over the visible points
    side_rel: float  # side of the visible part, in database pixels, over the database image's longer side


def pair_geometry(h_query: np.ndarray, bbx: tuple[float, float, float, float], h_db: np.ndarray,
                  db_size: tuple[int, int], db_mask: np.ndarray | None = None, grid: int = GRID) -> PairGeometry:
    """Visible fraction and local distortion of a query box ``bbx`` (query pixels) in a database view.

    ``h_query`` / ``h_db`` map image to world; ``db_mask`` (``(h, w)`` bool, True = occluded) hides
    the database image's occluders.
    """
    w, h = db_size
    pts = _grid(bbx, grid)
    t = np.linalg.inv(h_db) @ h_query  # query pixels -> database pixels
    t = t / t[2, 2]
    q = apply_homography(t, pts)
    with np.errstate(invalid="ignore"):
        inside = (q[:, 0] >= 0) & (q[:, 0] < w) & (q[:, 1] >= 0) & (q[:, 1] < h)
    if db_mask is not None and inside.any():
        xi = np.clip(q[inside, 0].astype(np.int64), 0, w - 1)
        yi = np.clip(q[inside, 1].astype(np.int64), 0, h - 1)
        vis = np.zeros_like(inside)
        vis[np.flatnonzero(inside)] = ~db_mask[yi, xi]
        inside = vis
    n_vis = int(inside.sum())
    visible = n_vis / pts.shape[0]
    if n_vis == 0:
        return PairGeometry(0.0, 0.0, 1.0, 0.0, 1.0, 0.0)
    vis_pts = pts[inside]
    j = _jacobians(t, vis_pts.mean(axis=0, keepdims=True))[0]
    u, s, vt = np.linalg.svd(j)
    r = u @ vt
    scale = float(np.sqrt(s[0] * s[1]))
    local = np.sqrt(np.abs(np.linalg.det(_jacobians(t, vis_pts))))
    box_area = (bbx[2] - bbx[0]) * (bbx[3] - bbx[1])
    side = float(np.sqrt(visible * box_area * float(np.mean(local ** 2))))
    return PairGeometry(
        visible=float(visible),
        scale=scale,
        anisotropy=float(s[0] / max(s[1], 1e-12)),
        rotation_deg=float(np.degrees(np.arctan2(r[1, 0], r[0, 0]))),
        scale_spread=float(local.max() / max(local.min(), 1e-12)),
        side_rel=side / max(w, h),
    )


def label_pair(g: PairGeometry, photometric_severe: bool = False) -> str:
    """``"easy"``, ``"hard"``, ``"junk"`` or ``"negative"`` by the rule in the module docstring."""
    if g.visible <= 0.0:
        return "negative"
    if g.visible < JUNK_VISIBLE or g.side_rel < JUNK_SIDE:
        return "junk"
    easy = (
        g.visible >= EASY_VISIBLE
        and 1.0 / EASY_SCALE <= g.scale <= EASY_SCALE
        and g.anisotropy <= EASY_ANISOTROPY
        and abs(g.rotation_deg) <= EASY_ROTATION_DEG
        and g.scale_spread <= EASY_SCALE_SPREAD
        and not photometric_severe
    )
    return "easy" if easy else "hard"

"""Photographing a scene again: sample a view (camera pose + photometry + occluders) and render it.

Every view is drawn from its own ``numpy`` generator, so one image never depends on how many others
were sampled before it. Rendering is a perspective warp of the photograph (Pillow, bicubic, from a
2x pyramid level so strong zoom-outs do not alias), then occluders, colour/illumination changes,
blur, sensor noise and finally JPEG compression at the view's own quality: the file written *is*
the artefact.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from bitseek.data.embedded.landmarks.geometry import apply_homography, view_homography

__all__ = ["ASPECTS", "KINDS", "Occluder", "View", "occlusion_mask", "render_view", "sample_view"]

ASPECTS = (1.0, 4 / 3, 3 / 2, 16 / 9, 5 / 4)
KINDS = ("query", "near", "hard", "partial", "other", "distractor")
SEVERE_FACTORS = ("gamma", "contrast", "brightness", "blur", "jpeg", "cast")


@dataclass
class Occluder:
    """A shape in image pixels filled with a texture crop or a flat colour."""

    shape: str  # "ellipse" | "rectangle" | "polygon"
    points: list[list[float]]  # bounding box [[x1, y1], [x2, y2]] or polygon vertices
    fill: list[int] | None  # flat RGB colour, or None = texture
    texture: int  # index of the distractor photograph used as texture
    texture_box: list[float]  # crop of that photograph (x1, y1, x2, y2)


@dataclass
class View:
    """Everything needed to render one image and to label it against a query box."""

    size: tuple[int, int]  # (w, h)
    corners: np.ndarray  # (4, 2) world coordinates of the image corners TL, TR, BR, BL
    photometric: dict[str, Any]
    severe: tuple[str, ...] = ()
    occluders: list[Occluder] = field(default_factory=list)
    kind: str = "near"

    @property
    def homography(self) -> np.ndarray:
        return view_homography(self.size, self.corners)

    def to_json(self) -> dict[str, Any]:
        return {"size": list(self.size), "corners": self.corners.tolist(), "kind": self.kind,
                "photometric": self.photometric, "severe": list(self.severe),
                "occluders": [dict(o.__dict__) for o in self.occluders]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "View":
        """The view recorded in ``views.json`` (floats round-trip exactly through JSON)."""
        return cls((int(d["size"][0]), int(d["size"][1])), np.asarray(d["corners"], dtype=np.float64),
                   dict(d["photometric"]), tuple(d["severe"]), [Occluder(**o) for o in d["occluders"]], d["kind"])


def _size(rng: np.random.Generator, max_side: int) -> tuple[int, int]:
    long = int(round(max_side * rng.uniform(0.7, 1.0)))
    short = int(round(long / ASPECTS[rng.integers(len(ASPECTS))]))
    return (long, short) if rng.random() < 0.7 else (short, long)


def _corners(centre: np.ndarray, size: tuple[int, int], scale: float, rot_deg: float, persp: float,
             rng: np.random.Generator) -> np.ndarray:
    w, h = size
    base = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]]) * scale
    t = math.radians(rot_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    pts = base @ rot.T
    pts = pts + rng.uniform(-1.0, 1.0, size=(4, 2)) * persp * scale * max(w, h)
    return pts + centre


def _fit(corners: np.ndarray, world: tuple[int, int]) -> np.ndarray:
    """Shrink (about its centre) and shift a frame until it lies inside the photograph."""
    W, H = world
    c = corners.mean(axis=0)
    span = corners.max(axis=0) - corners.min(axis=0)
    k = min(1.0, 0.999 * W / span[0], 0.999 * H / span[1])
    pts = c + (corners - c) * k
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    shift = np.maximum(0.0, -lo) - np.maximum(0.0, hi - np.array([W, H], dtype=np.float64))
    return pts + shift


def _convex(pts: np.ndarray) -> bool:
    d = np.roll(pts, -1, axis=0) - pts
    cross = d[:, 0] * np.roll(d, -1, axis=0)[:, 1] - d[:, 1] * np.roll(d, -1, axis=0)[:, 0]
    return bool(np.all(cross > 0) or np.all(cross < 0))


def _photometric(rng: np.random.Generator, severe: tuple[str, ...]) -> dict[str, Any]:
    p: dict[str, Any] = {
        "gains": [float(g) for g in rng.uniform(0.9, 1.1, size=3)],
        "saturation": float(rng.uniform(0.0, 0.3) if rng.random() < 0.12 else rng.uniform(0.75, 1.25)),
        "contrast": float(rng.uniform(0.8, 1.15)),
        "brightness": float(rng.uniform(-0.06, 0.06)),
        "gamma": float(math.exp(rng.uniform(-0.2, 0.2))),
        "blur": float(rng.uniform(0.0, 0.002)),  # Gaussian sigma over the longer side
        "noise": float(rng.uniform(0.0, 0.012)),
        "jpeg": int(rng.integers(55, 96)),
        "noise_seed": int(rng.integers(2**31)),
    }
    for f in severe:
        if f == "gamma":
            p["gamma"] = float(math.exp(rng.choice([-1.0, 1.0]) * rng.uniform(0.65, 1.0)))
        elif f == "contrast":
            p["contrast"] = float(rng.uniform(0.3, 0.45))
        elif f == "brightness":
            p["brightness"] = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.3))
        elif f == "blur":
            p["blur"] = float(rng.uniform(0.008, 0.014))
        elif f == "jpeg":
            p["jpeg"] = int(rng.integers(6, 15))
        elif f == "cast":
            g = [float(rng.uniform(0.55, 0.7)), 1.0, float(rng.uniform(1.3, 1.5))]
            p["gains"] = [g[i] for i in rng.permutation(3)]
    return p


def _occluder(rng: np.random.Generator, centre: np.ndarray, radius: float, n_textures: int) -> Occluder:
    shape = ("ellipse", "rectangle", "polygon")[int(rng.integers(3))]
    rx, ry = radius * rng.uniform(0.7, 1.3), radius * rng.uniform(0.7, 1.3)
    if shape == "polygon":
        k = int(rng.integers(3, 7))
        ang = np.sort(rng.uniform(0, 2 * math.pi, size=k))
        rad = rng.uniform(0.7, 1.3, size=k)
        pts = [[float(centre[0] + rx * r * math.cos(a)), float(centre[1] + ry * r * math.sin(a))]
               for a, r in zip(ang, rad)]
    else:
        pts = [[float(centre[0] - rx), float(centre[1] - ry)], [float(centre[0] + rx), float(centre[1] + ry)]]
    flat = rng.random() < 0.35
    fill = [int(v) for v in rng.integers(0, 256, size=3)] if flat else None
    tx, ty, ts = rng.uniform(0, 0.5), rng.uniform(0, 0.5), rng.uniform(0.2, 0.5)
    return Occluder(shape, pts, fill, int(rng.integers(max(n_textures, 1))), [tx, ty, tx + ts, ty + ts])


def sample_view(rng: np.random.Generator, world: tuple[int, int], target: np.ndarray, kind: str, max_side: int,
                n_textures: int) -> View:
    """One random view of a photograph of size ``world`` (w, h) around ``target`` (x1, y1, x2, y2, world).

    ``kind`` sets the sampling distribution only (labels come from the geometry): ``query`` (frontal,
    target well inside, clean), ``near`` (small changes), ``hard`` (one to three strong changes among
    zoom, rotation, perspective, occlusion and photometry), ``partial`` (the frame shifted off the
    target), ``other`` (anywhere in the photograph) and ``distractor`` (anywhere, any condition).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown view kind {kind!r}")
    size = _size(rng, max_side)
    W, H = world
    t = np.asarray(target, dtype=np.float64)
    tc = (t[:2] + t[2:]) / 2
    tw, th = t[2] - t[0], t[3] - t[1]
    fill = rng.uniform(0.6, 0.8)  # the target spans about this fraction of the frame
    base = max(tw / (fill * size[0]), th / (fill * size[1]))
    centre = tc + rng.normal(0.0, 0.06, size=2) * [tw, th]
    scale, rot, persp = base * math.exp(rng.uniform(-0.2, 0.2)), rng.uniform(-6, 6), rng.uniform(0.0, 0.035)
    severe: tuple[str, ...] = ()
    occl: list[tuple[np.ndarray | None, float]] = []  # (centre in world or None = anywhere, radius factor)
    if kind == "query":
        centre = tc + rng.normal(0.0, 0.03, size=2) * [tw, th]
        scale, rot, persp = base * math.exp(rng.uniform(-0.1, 0.1)), rng.uniform(-3, 3), rng.uniform(0.0, 0.02)
    elif kind == "near":
        if rng.random() < 0.3:
            occl.append((None, rng.uniform(0.08, 0.14)))
    elif kind == "hard":
        factors = list(rng.choice(["zoom_out", "zoom_in", "rotate", "perspective", "occlusion", "photometric"],
                                  size=int(rng.integers(1, 4)), replace=False))
        if "zoom_out" in factors and "zoom_in" in factors:
            factors.remove("zoom_in")
        if "zoom_out" in factors:
            scale *= rng.uniform(2.0, 3.2)
        if "zoom_in" in factors:
            scale *= rng.uniform(0.35, 0.5)
        if "rotate" in factors:
            rot = float(rng.choice([-1.0, 1.0]) * rng.uniform(20, 45))
        if "perspective" in factors:
            persp = rng.uniform(0.12, 0.22)
        if "occlusion" in factors:
            for _ in range(int(rng.integers(1, 3))):
                occl.append((tc + rng.uniform(-0.3, 0.3, size=2) * [tw, th], rng.uniform(0.25, 0.4)))
        if "photometric" in factors:
            k = int(rng.integers(1, 3))
            severe = tuple(str(f) for f in rng.choice(SEVERE_FACTORS, size=k, replace=False))
    elif kind == "partial":
        ang = rng.uniform(0, 2 * math.pi)
        reach = rng.uniform(0.75, 1.05) * np.array([tw / 2 + scale * size[0] / 2, th / 2 + scale * size[1] / 2])
        centre = tc + reach * [math.cos(ang), math.sin(ang)]
        if rng.random() < 0.3:
            occl.append((None, rng.uniform(0.08, 0.14)))
    else:  # other / distractor: anywhere in the photograph
        if kind == "distractor":
            scale = max(W, H) / max(size) * rng.uniform(0.25, 0.9)
        else:
            scale = base * math.exp(rng.uniform(-0.3, 0.4))
        centre = np.array([rng.uniform(0, W), rng.uniform(0, H)])
        rot, persp = rng.uniform(-10, 10), rng.uniform(0.0, 0.08)
        if rng.random() < 0.2:
            severe = (str(rng.choice(SEVERE_FACTORS)),)
        if rng.random() < 0.3:
            occl.append((None, rng.uniform(0.08, 0.2)))
    corners = _corners(centre, size, scale, rot, persp, rng)
    for _ in range(8):
        if _convex(corners):
            break
        corners = _corners(centre, size, scale, rot, persp * 0.5, rng)
    corners = _fit(corners, world)
    photo = _photometric(rng, severe)
    view = View(size, corners, photo, severe, [], kind)
    h_inv = np.linalg.inv(view.homography)
    diag = math.hypot(*size)
    for where, radius in occl:
        if where is None:
            c_img = np.array([rng.uniform(0, size[0]), rng.uniform(0, size[1])])
            r = radius * diag / 2
        else:
            c_img = apply_homography(h_inv, where[None, :])[0]
            target_px = math.sqrt(tw * th) / math.sqrt(abs(np.linalg.det(view.homography[:2, :2])) + 1e-12)
            r = min(radius * target_px, 0.3 * min(size))  # never a wall over the whole frame
        view.occluders.append(_occluder(rng, c_img, r, n_textures))
    return view


_PYRAMIDS: dict[tuple[str, int], Image.Image] = {}


def _pyramid(key: str, pixels: np.ndarray, level: int) -> Image.Image:
    """The photograph ``key`` (name + checksum) reduced by ``2**level`` with a box filter, cached."""
    if (key, level) not in _PYRAMIDS:
        if len(_PYRAMIDS) > 64:
            _PYRAMIDS.clear()
        base = Image.fromarray(pixels)
        _PYRAMIDS[(key, level)] = base.reduce(2 ** level) if level else base
    return _PYRAMIDS[(key, level)]


def occlusion_mask(view: View) -> np.ndarray:
    """``(h, w)`` bool, True where an occluder covers the image (the same pixels it is painted on)."""
    m = Image.new("L", view.size, 0)
    draw = ImageDraw.Draw(m)
    for o in view.occluders:
        _draw(draw, o, 255)
    return np.asarray(m) > 127


def _draw(draw: ImageDraw.ImageDraw, o: Occluder, value: int) -> None:
    pts = [tuple(p) for p in o.points]
    if o.shape == "ellipse":
        (x1, y1), (x2, y2) = pts
        draw.ellipse([x1, y1, x2, y2], fill=value)
    elif o.shape == "rectangle":
        (x1, y1), (x2, y2) = pts
        draw.rectangle([x1, y1, x2, y2], fill=value)
    else:
        draw.polygon(pts, fill=value)


def render_view(key: str, pixels: np.ndarray, view: View, textures: list[np.ndarray]) -> tuple[bytes, np.ndarray]:
    """``(JPEG bytes, occlusion mask)`` of one view of the photograph ``pixels`` (uint8 RGB, world)."""
    h_img2world = view.homography
    w, h = view.size
    s = math.sqrt(abs(np.linalg.det(h_img2world[:2, :2])))  # world pixels per image pixel, about
    level = max(0, min(3, int(math.floor(math.log2(max(s * 1.25, 1.0))))))
    src = _pyramid(key, pixels, level)
    f = 1.0 / 2 ** level
    hl = np.diag([f, f, 1.0]) @ h_img2world
    hl = hl / hl[2, 2]
    img = src.transform((w, h), Image.Transform.PERSPECTIVE, tuple(hl.ravel()[:8].tolist()),
                        resample=Image.Resampling.BICUBIC)
    mask = occlusion_mask(view)
    if view.occluders:
        arr = np.array(img)
        for o in view.occluders:
            one = Image.new("L", view.size, 0)
            _draw(ImageDraw.Draw(one), o, 255)
            sel = np.asarray(one) > 127
            if o.fill is not None:
                arr[sel] = o.fill
            else:
                tex = textures[o.texture % len(textures)]
                th_, tw_ = tex.shape[:2]
                x1, y1, x2, y2 = o.texture_box
                crop = Image.fromarray(tex).crop((int(x1 * tw_), int(y1 * th_), int(x2 * tw_), int(y2 * th_)))
                arr[sel] = np.asarray(crop.resize((w, h), Image.Resampling.BILINEAR))[sel]
        img = Image.fromarray(arr)
    p = view.photometric
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = x * np.asarray(p["gains"], dtype=np.float32)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * np.float32(p["saturation"])
    x = (x - x.mean()) * np.float32(p["contrast"]) + x.mean() + np.float32(p["brightness"])
    x = np.clip(x, 0.0, 1.0) ** np.float32(p["gamma"])
    img = Image.fromarray(np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8))
    sigma = p["blur"] * max(w, h)
    if sigma > 0.3:
        img = img.filter(ImageFilter.GaussianBlur(sigma))
    if p["noise"] > 0:
        rs = np.random.default_rng(int(p["noise_seed"]))
        y = np.asarray(img, dtype=np.float32) + rs.normal(0.0, p["noise"] * 255.0, size=(h, w, 3)).astype(np.float32)
        img = Image.fromarray(np.clip(np.rint(y), 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(p["jpeg"]))
    return buf.getvalue(), mask

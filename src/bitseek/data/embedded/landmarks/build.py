"""Writing the landmark benchmark in the revisitop layouts, deterministically, atomically, once.

Layout under ``root``::

    landmarks/gnd_landmarks.pkl         revisitop ground truth (protocol-3 pickle of builtins only)
    landmarks/jpg/<name>.jpg            queries and database images (queries are not in imlist)
    landmarks/views.json                every test image's view: frame corners, photometry, occluders
    revisitop1m/revisitop1m.txt         distractor list, one path per line with its extension
    revisitop1m/jpg/<dd>/<name>.jpg     distractor images
    train/<class>/<name>.jpg            disjoint training split, one folder per landmark
    bitseek-dataset.json                manifest, written last: parameters, sources, sizes, checksums

Each test photograph holds two or three disjoint landmark regions (:func:`landmarks_per_photo`); queries are frontal
views of one with ``bbx`` = the region's projection, the database mixes views near each region,
hard views of it, views shifted off it and views of anywhere else in the same photograph (so a
same-scene view with the same colours is often a negative). Labels are computed geometrically by
:mod:`.geometry`. The database order is shuffled, so an unranked list says nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitseek.data.embedded.common import read_manifest as _read_manifest_file
from bitseek.data.embedded.common import write_manifest
from bitseek.data.embedded.landmarks.geometry import apply_homography, label_pair, pair_geometry
from bitseek.data.embedded.landmarks.render import View, render_view, sample_view
from bitseek.data.embedded.landmarks.sources import DISTRACTORS, TEST, TRAIN, Photo, load_photo
from bitseek.errors import ConfigError, FileFormatError
from bitseek.progress import progress

__all__ = ["DISTRACTOR_DIR", "DISTRACTOR_LIST", "FORMAT", "MANIFEST", "NAME", "SIZES", "TRAIN_DIR", "VERSION",
           "SizeSpec", "build_landmarks", "landmark_regions", "landmarks_per_photo", "read_manifest"]

NAME = "landmarks"
MANIFEST = "bitseek-dataset.json"
FORMAT = "bitseek-landmarks"
VERSION = 1
DISTRACTOR_DIR = "revisitop1m"
DISTRACTOR_LIST = "revisitop1m.txt"
TRAIN_DIR = "train"
WIDE_PHOTO = 600  # a photograph this long (pixels, longer side) holds three landmarks, a smaller one two
DB_MIX = (("near", 0.25), ("hard", 0.3), ("partial", 0.1), ("other", 0.35))
_OURS = (NAME, DISTRACTOR_DIR, TRAIN_DIR, MANIFEST)
_TMP_PREFIX = ".landmarks-build."


@dataclass(frozen=True)
class SizeSpec:
    """How much of everything one size builds."""

    test_photos: int
    train_photos: int
    distractor_photos: int
    max_side: int  # longer image side is drawn from [0.7, 1] x this
    queries_per_landmark: int
    db_per_photo: int
    distractors: int
    train_per_class: int


SIZES = {
    "tiny": SizeSpec(3, 2, 3, 128, 1, 16, 12, 4),
    "small": SizeSpec(8, 6, 9, 320, 3, 48, 400, 24),
    "full": SizeSpec(8, 6, 9, 640, 5, 160, 4000, 80),
}


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a built benchmark; missing or corrupt is a ``FileFormatError``."""
    return _read_manifest_file(Path(root) / MANIFEST)


def landmarks_per_photo(world: tuple[int, int]) -> int:
    """Three regions where the photograph is large enough that each still renders near full resolution."""
    return 3 if max(world) >= WIDE_PHOTO else 2


def landmark_regions(rng: np.random.Generator, world: tuple[int, int], k: int | None = None) -> np.ndarray:
    """``(k, 4)`` disjoint rectangles (x1, y1, x2, y2): one inside each of ``k`` strips along the longer side."""
    W, H = world
    k = landmarks_per_photo(world) if k is None else k
    out = []
    for i in range(k):
        if W >= H:
            sx0, sx1, sy0, sy1 = W * i / k, W * (i + 1) / k, 0.0, float(H)
        else:
            sx0, sx1, sy0, sy1 = 0.0, float(W), H * i / k, H * (i + 1) / k
        w, h = (sx1 - sx0) * rng.uniform(0.4, 0.6), (sy1 - sy0) * rng.uniform(0.4, 0.6)
        x0 = sx0 + rng.uniform(0, sx1 - sx0 - w)
        y0 = sy0 + rng.uniform(0, sy1 - sy0 - h)
        out.append([x0, y0, x0 + w, y0 + h])
    return np.asarray(out)


def _rng(seed: int, *path: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), 20261202, *path])


def _kinds(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` database view kinds in the ``DB_MIX`` proportions (largest remainder), shuffled."""
    raw = np.array([f for _, f in DB_MIX]) * n
    cnt = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - cnt), kind="stable")[: n - int(cnt.sum())]:
        cnt[i] += 1
    kinds = [k for (k, _), c in zip(DB_MIX, cnt) for _ in range(c)]
    return [kinds[i] for i in rng.permutation(n)]


def _query_box(view: View, region: np.ndarray) -> list[float]:
    x1, y1, x2, y2 = region
    pts = apply_homography(np.linalg.inv(view.homography), np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]]))
    w, h = view.size
    lo = np.clip(pts.min(axis=0), 0, [w, h])
    hi = np.clip(pts.max(axis=0), 0, [w, h])
    return [round(float(lo[0]), 1), round(float(lo[1]), 1), round(float(hi[0]), 1), round(float(hi[1]), 1)]


def _check_out_dir(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise ConfigError(f"landmarks --out {root}: exists and is not a directory")
    if root.is_dir():
        foreign = sorted(p.name for p in root.iterdir() if p.name not in _OURS and not p.name.startswith(_TMP_PREFIX))
        if foreign:
            raise ConfigError(f"landmarks --out {root}: holds other files ({', '.join(foreign[:3])}); "
                              "give an empty or new folder")


def _sweep_dead_builds(root: Path) -> None:
    """Remove temporary folders left by builds whose process is gone (killed mid-way)."""
    for p in root.glob(f"{_TMP_PREFIX}*.tmp"):
        try:
            pid = int(p.name[len(_TMP_PREFIX):].split(".", 1)[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue


def _complete(root: Path, expected: dict[str, Any]) -> dict[str, Any] | None:
    try:
        man = read_manifest(root)
    except FileFormatError:
        return None
    if {k: man.get(k) for k in expected} != expected:
        return None
    files = man.get("files")
    if not isinstance(files, dict):
        return None
    for rel, entry in files.items():
        p = root / rel
        try:
            if p.stat().st_size != entry[0]:
                return None
        except (OSError, TypeError, IndexError):
            return None
    return man


class _Writer:
    """Files written under a temporary folder; their sizes and checksums kept for the manifest."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.files: dict[str, list[Any]] = {}

    def write(self, rel: str, data: bytes) -> None:
        p = self.tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        self.files[rel] = [len(data), hashlib.sha256(data).hexdigest()]


def _photos(pool: tuple[Photo, ...], n: int, what: str) -> list[tuple[Photo, np.ndarray, str]]:
    if n > len(pool):
        raise ConfigError(f"landmarks: {n} {what} photographs asked for, {len(pool)} available")
    return [(p, *load_photo(p)) for p in pool[:n]]


def _label_stats(gnd: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in ("easy", "hard", "junk"):
        n = np.array([len(g[k]) for g in gnd])
        out[k] = {"mean": round(float(n.mean()), 2), "min": int(n.min()), "max": int(n.max())}
    out["queries_without_easy"] = int(sum(1 for g in gnd if not g["easy"]))
    out["queries_without_hard"] = int(sum(1 for g in gnd if not g["hard"]))
    return out


def _build_test(w: _Writer, spec: SizeSpec, seed: int, textures: list[np.ndarray]) -> dict[str, Any]:
    """Queries, database and ground truth of the test photographs."""
    photos = _photos(TEST, spec.test_photos, "test")
    qnames: list[str] = []
    qinfo: list[tuple[int, View, list[float]]] = []  # (photo, view, bbx)
    db: list[tuple[str, int, View, dict[int, str]]] = []  # (name, photo, view, {query: label})
    views: dict[str, Any] = {}
    for pi, (photo, pixels, sha) in enumerate(progress(photos, desc="landmarks test", unit="scene")):
        world = (pixels.shape[1], pixels.shape[0])
        regions = landmark_regions(_rng(seed, 1, pi, 0), world)
        n_q = len(regions) * spec.queries_per_landmark
        numbers = _rng(seed, 1, pi, 3).permutation(n_q + spec.db_per_photo)
        key = f"{photo.name}:{sha}"
        first_q = len(qinfo)
        for li, region in enumerate(regions):
            for qi in range(spec.queries_per_landmark):
                view = sample_view(_rng(seed, 1, pi, 1, li, qi), world, region, "query", spec.max_side, len(textures))
                name = f"{photo.name}_{numbers[len(qinfo) - first_q]:06d}"
                jpeg, _ = render_view(key, pixels, view, textures)
                w.write(f"{NAME}/jpg/{name}.jpg", jpeg)
                bbx = _query_box(view, region)
                qnames.append(name)
                qinfo.append((pi, view, bbx))
                views[name] = {**view.to_json(), "scene": photo.name, "landmark": li, "bbx": bbx}
        kinds = _kinds(spec.db_per_photo, _rng(seed, 1, pi, 4))
        for j, kind in enumerate(kinds):
            li = j % len(regions)
            view = sample_view(_rng(seed, 1, pi, 2, j), world, regions[li], kind, spec.max_side, len(textures))
            name = f"{photo.name}_{numbers[n_q + j]:06d}"
            jpeg, mask = render_view(key, pixels, view, textures)
            w.write(f"{NAME}/jpg/{name}.jpg", jpeg)
            labels = {}
            for qi in range(first_q, len(qinfo)):
                _, qview, bbx = qinfo[qi]
                g = pair_geometry(qview.homography, tuple(bbx), view.homography, view.size, mask)  # type: ignore[arg-type]
                labels[qi] = label_pair(g, photometric_severe=bool(view.severe))
            db.append((name, pi, view, labels))
            views[name] = {**view.to_json(), "scene": photo.name, "landmark": li,
                           "labels": {qnames[q]: lab for q, lab in labels.items()}}
    order = _rng(seed, 9).permutation(len(db))
    imlist = [db[i][0] for i in order]
    gnd: list[dict[str, Any]] = []
    for qi, (_, _, bbx) in enumerate(qinfo):
        sets: dict[str, list[int]] = {"easy": [], "hard": [], "junk": []}
        for pos, i in enumerate(order):
            lab = db[i][3].get(qi, "negative")
            if lab in sets:
                sets[lab].append(pos)
        gnd.append({"bbx": [float(v) for v in bbx], **sets})
    gt = {"gnd": gnd, "imlist": imlist, "qimlist": qnames}  # key order of revisitop's files
    w.write(f"{NAME}/gnd_{NAME}.pkl", pickle.dumps(gt, protocol=3))
    w.write(f"{NAME}/views.json", json.dumps(views, sort_keys=True).encode())
    return {"queries": len(qnames), "database": len(imlist), "labels": _label_stats(gnd),
            "sources": {p.name: {"package": p.package, "file": p.file, "sha256": sha} for p, _, sha in photos}}


def _build_distractors(w: _Writer, spec: SizeSpec, seed: int, pool: list[tuple[Photo, np.ndarray, str]],
                       textures: list[np.ndarray]) -> dict[str, Any]:
    lines = []
    for k in progress(range(spec.distractors), desc="landmarks distractors", unit="img"):
        rng = _rng(seed, 3, k)
        photo, pixels, sha = pool[int(rng.integers(len(pool)))]
        world = (pixels.shape[1], pixels.shape[0])
        view = sample_view(rng, world, np.array([0, 0, world[0], world[1]], dtype=np.float64), "distractor",
                           spec.max_side, len(textures))
        rel = f"{k // 1000:03d}/{k:08d}.jpg"
        jpeg, _ = render_view(f"{photo.name}:{sha}", pixels, view, textures)
        w.write(f"{DISTRACTOR_DIR}/jpg/{rel}", jpeg)
        lines.append(rel)
    w.write(f"{DISTRACTOR_DIR}/{DISTRACTOR_LIST}", ("\n".join(lines) + "\n").encode() if lines else b"")
    return {"distractors": len(lines),
            "sources": {p.name: {"package": p.package, "file": p.file, "sha256": sha} for p, _, sha in pool}}


def _build_train(w: _Writer, spec: SizeSpec, seed: int, textures: list[np.ndarray]) -> dict[str, Any]:
    photos = _photos(TRAIN, spec.train_photos, "train")
    classes = []
    for ti, (photo, pixels, sha) in enumerate(progress(photos, desc="landmarks train", unit="scene")):
        world = (pixels.shape[1], pixels.shape[0])
        regions = landmark_regions(_rng(seed, 2, ti, 0), world)
        for li, region in enumerate(regions):
            cls = f"{photo.name}_{li}"
            classes.append(cls)
            for j in range(spec.train_per_class):
                kind = ("query", "near", "hard", "near")[j % 4]
                view = sample_view(_rng(seed, 2, ti, 1, li, j), world, region, kind, spec.max_side, len(textures))
                jpeg, _ = render_view(f"{photo.name}:{sha}", pixels, view, textures)
                w.write(f"{TRAIN_DIR}/{cls}/{cls}_{j:05d}.jpg", jpeg)
    return {"train_classes": classes, "train_images": len(classes) * spec.train_per_class,
            "sources": {p.name: {"package": p.package, "file": p.file, "sha256": sha} for p, _, sha in photos}}


def build_landmarks(out_dir: str | os.PathLike[str], size: str = "tiny", seed: int = 0, force: bool = False) -> Path:
    """Write (or reuse) the benchmark under ``out_dir``; returns ``out_dir`` as a Path.

    ``root / "landmarks"`` is a revisitop dataset folder (``gnd_landmarks.pkl`` + ``jpg/``) for
    :func:`bitseek.data.revisited.load_gnd`; ``root / "revisitop1m"`` the distractors;
    ``root / "train"`` the class-per-folder training split. Same ``size`` and ``seed`` give the
    same bytes (checked by the manifest's checksums); a complete build is reused untouched.
    """
    if size not in SIZES:
        raise ConfigError(f"landmarks: size must be one of {', '.join(SIZES)}, got {size!r}")
    root = Path(os.path.expanduser(os.fspath(out_dir)))
    spec = SIZES[size]
    expected = {"format": FORMAT, "version": VERSION, "size": size, "seed": int(seed), "spec": asdict(spec)}
    if not force and _complete(root, expected) is not None:
        return root
    _check_out_dir(root)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pool = _photos(DISTRACTORS, spec.distractor_photos, "distractor")
    textures = [pixels for _, pixels, _ in pool]
    _sweep_dead_builds(root)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}.", suffix=".tmp", dir=root))
    try:
        w = _Writer(tmp)
        test = _build_test(w, spec, seed, textures)
        distr = _build_distractors(w, spec, seed, pool, textures)
        train = _build_train(w, spec, seed, textures)
        (root / MANIFEST).unlink(missing_ok=True)  # from here on the folder is incomplete until the new manifest
        for part in (NAME, DISTRACTOR_DIR, TRAIN_DIR):
            if (root / part).exists():
                shutil.rmtree(root / part)
            os.rename(tmp / part, root / part)
        import PIL

        manifest = {
            **expected,
            "name": NAME,
            "sizes": {"queries": test["queries"], "database": test["database"],
                      "distractors": distr["distractors"], "train_images": train["train_images"],
                      "train_classes": len(train["train_classes"])},
            "labels": test["labels"],
            "train_classes": train["train_classes"],
            "sources": {"test": test["sources"], "train": train["sources"], "distractors": distr["sources"]},
            "pillow": PIL.__version__,
            "files": dict(sorted(w.files.items())),
            "build_seconds": round(time.perf_counter() - t0, 3),
        }
        write_manifest(root / MANIFEST, manifest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root

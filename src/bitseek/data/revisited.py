"""Revisited Oxford/Paris: the ground truth (revisitop ``gnd_<dataset>.pkl``) and the image datasets.

The gnd file lists the database images (``imlist``), the queries (``qimlist``) and per query its
bounding box and the ``easy``/``hard``/``junk`` database indices; it is read without unpickling
any object. The ``roxford5k`` / ``rparis6k`` presets pair it with revisitop's ``jpg/`` folder:
queries are cropped to their box (as revisitop's ``example_evaluate.py`` does), database images
are used whole, and the data carries the gnd so evaluation runs the Easy/Medium/Hard protocol of
:mod:`bitseek.eval.revisited` with no special path.

:func:`revisitop_images` and :func:`read_distractors` give the file lists of CVNet's test (the
``<data_dir>/<dataset>/`` layout and revisitop's ``revisitop1m.txt``), every image named by the gnd
checked up front; :func:`read_bgr` decodes as that test does (OpenCV, BGR uint8).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bitseek.errors import ConfigError, FileFormatError
from bitseek.registry import register_dataset
from bitseek.safe_pickle import ALLOW_NOTHING, PickleRefused, load_file

__all__ = ["load_gnd", "query_boxes", "RevisitedConfig", "ROxford5kConfig", "RParis6kConfig", "RevisitedImages",
           "load_revisited", "RevisitopImages", "revisitop_images", "read_distractors", "read_bgr",
           "DISTRACTOR_LIST"]


def _index_list(v: Any, where: str) -> list[int]:
    if not isinstance(v, (list, tuple)):
        raise FileFormatError(f"{where}: expected a list of image indices, got {type(v).__name__}")
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v):
        raise FileFormatError(f"{where}: image indices must be non-negative integers")
    return list(v)


def load_gnd(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and check a revisitop ``gnd_<dataset>.pkl`` without unpickling arbitrary objects.

    Returns the dict ``{"imlist": [...], "qimlist": [...], "gnd": [{"bbx", "easy", "hard", "junk"}]}``.
    Any class reference, missing key, wrong type or out-of-range index raises FileFormatError.
    """
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(f"{p}: no such ground-truth file")
    try:  # no global resolves: every way of running code from a pickle goes through one
        obj = load_file(p, ALLOW_NOTHING)
    except PickleRefused as e:
        if e.global_name:
            raise FileFormatError(f"{p}: refuses to load {e.global_name}; a ground-truth pickle may only contain "
                                  "dicts, lists, strings and numbers") from None
        raise FileFormatError(f"{p}: not a readable ground-truth pickle ({e.reason})") from None
    except FileFormatError as e:  # truncated or not a pickle at all
        raise FileFormatError(f"{p}: not a readable ground-truth pickle ({str(e).split(': ', 1)[-1]})") from None
    if not isinstance(obj, dict):
        raise FileFormatError(f"{p}: expected a dict at top level, got {type(obj).__name__}")
    for key in ("imlist", "qimlist", "gnd"):
        if key not in obj:
            raise FileFormatError(f"{p}: missing key {key!r}")
        if not isinstance(obj[key], list):
            raise FileFormatError(f"{p}: {key!r} must be a list, got {type(obj[key]).__name__}")
    if not all(isinstance(s, str) for s in obj["imlist"] + obj["qimlist"]):
        raise FileFormatError(f"{p}: image names must be strings")
    if len(obj["gnd"]) != len(obj["qimlist"]):
        raise FileFormatError(f"{p}: {len(obj['gnd'])} gnd entries for {len(obj['qimlist'])} queries")
    n_db = len(obj["imlist"])
    for i, g in enumerate(obj["gnd"]):
        where = f"{p}: gnd[{i}]"
        if not isinstance(g, dict):
            raise FileFormatError(f"{where}: expected a dict, got {type(g).__name__}")
        for key in ("easy", "hard", "junk"):
            if key not in g:
                raise FileFormatError(f"{where}: missing key {key!r}")
            idx = _index_list(g[key], f"{where}[{key!r}]")
            if idx and max(idx) >= n_db:
                raise FileFormatError(f"{where}[{key!r}]: index {max(idx)} outside the {n_db} database images")
        if "bbx" in g:
            b = g["bbx"]
            if not (isinstance(b, (list, tuple)) and len(b) == 4 and all(isinstance(x, (int, float)) for x in b)):
                raise FileFormatError(f"{where}['bbx']: expected 4 numbers [x1, y1, x2, y2]")
    return obj


def query_boxes(gnd: dict[str, Any]) -> list[tuple[float, float, float, float] | None]:
    """Per-query crop box ``(x1, y1, x2, y2)`` from a loaded gnd (None where the file has none).

    revisitop crops each query image to this box before extracting its descriptor.
    """
    return [tuple(float(v) for v in g["bbx"]) if "bbx" in g else None for g in gnd["gnd"]]  # type: ignore[misc]


# --------------------------------------------------------------------------- image datasets


@dataclass
class RevisitedConfig:
    """revisitop layout: ``root/gnd_<name>.pkl`` and ``root/jpg/<image>.jpg`` (``gnd``/``images`` override).

    ``max_size`` caps the longer side (aspect kept; 0 = original size, revisitop's own setting;
    CVNet tests at 1024). Images differ in size, so they are encoded one at a time.
    """

    name: str = "roxford5k"
    root: str = ""
    gnd: str = ""
    images: str = "jpg"
    ext: str = ".jpg"
    max_size: int = 1024
    batch_size: int = 1


class RevisitedImages:
    """One split of a revisitop dataset as ``{"image": (3, H, W) float32, "index": i}`` items."""

    variable_size = True  # items differ in size: the encoder batches them one by one

    def __init__(self, paths: list[Path], boxes: list[tuple[float, float, float, float] | None], max_size: int) -> None:
        self.paths = paths
        self.boxes = boxes
        self.max_size = int(max_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import numpy as np
        from PIL import Image

        from bitseek.data.image_io import load_image
        from bitseek.data.transforms import IMAGENET_MEAN, IMAGENET_STD, to_normalized_tensor

        img = load_image(self.paths[i])
        box = self.boxes[i]
        if box is not None:
            img = img.crop(box)  # PIL rounds the float box, as revisitop's crop does
        if self.max_size and max(img.size) > self.max_size:
            scale = self.max_size / max(img.size)
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
        return {"image": to_normalized_tensor(np.asarray(img), IMAGENET_MEAN, IMAGENET_STD), "index": i}


def load_revisited(cfg: RevisitedConfig) -> Any:
    """RetrievalData of a revisitop dataset: queries (cropped), database, and the gnd as relevance."""
    from bitseek.data.base import RetrievalData

    if not str(cfg.root).strip():
        raise ConfigError(f"{cfg.name}: 'root' is required (the folder with gnd_{cfg.name}.pkl and jpg/)")
    if cfg.max_size < 0:
        raise ConfigError(f"{cfg.name}.max_size: must be >= 0 (0 = original size), got {cfg.max_size}")
    root = Path(os.path.expanduser(cfg.root))
    gnd = load_gnd(Path(cfg.gnd) if cfg.gnd else root / f"gnd_{cfg.name}.pkl")
    images = root / cfg.images
    if not images.is_dir():
        raise ConfigError(f"{cfg.name}: no image folder {images} (revisitop's jpg/; set data.images)")

    def path(name: str) -> Path:
        p = images / f"{name}{cfg.ext}"
        if not p.is_file():
            raise FileFormatError(f"{p}: missing image listed in the ground truth")
        return p

    db = RevisitedImages([path(n) for n in gnd["imlist"]], [None] * len(gnd["imlist"]), cfg.max_size)
    q = RevisitedImages([path(n) for n in gnd["qimlist"]], query_boxes(gnd), cfg.max_size)
    info = {"root": str(root), "sizes": {"query": len(q), "database": len(db)}, "protocol": "revisited"}
    return RetrievalData(train=db, query=q, database=db, query_labels=None, db_labels=None, info=info, gnd=gnd)


@dataclass
class ROxford5kConfig(RevisitedConfig):
    name: str = "roxford5k"


@dataclass
class RParis6kConfig(RevisitedConfig):
    name: str = "rparis6k"


register_dataset("roxford5k", ROxford5kConfig)(load_revisited)
register_dataset("rparis6k", RParis6kConfig)(load_revisited)


# --------------------------------------------------------------------------- CVNet's test layout


DISTRACTOR_LIST = "revisitop1m.txt"


@dataclass
class RevisitopImages:
    """The image files of one revisitop test set, in the gnd's order (database indices = positions)."""

    name: str
    gnd_path: Path
    gnd: dict[str, Any]
    query: list[Path]
    database: list[Path]
    boxes: list[tuple[float, float, float, float]]


def revisitop_images(data_dir: str | os.PathLike[str], name: str) -> RevisitopImages:
    """``<data_dir>/<name>/gnd_<name>.pkl`` + ``jpg/<image>.jpg`` (CVNet's ``TEST.DATA_DIR`` layout).

    The gnd goes through :func:`load_gnd` (no unpickling; out-of-range indices refused) and every
    image it names must exist, so a half-copied dataset fails before any extraction starts.
    """
    root = Path(os.path.expanduser(str(data_dir))) / name
    gnd_path = root / f"gnd_{name}.pkl"
    if not root.is_dir():
        raise ConfigError(f"TEST.DATA_DIR: no folder {root} (expected {name}/gnd_{name}.pkl and {name}/jpg/)")
    gnd = load_gnd(gnd_path)
    jpg = root / "jpg"
    if not jpg.is_dir():
        raise ConfigError(f"{root}: no jpg/ folder beside gnd_{name}.pkl")
    boxes = query_boxes(gnd)
    missing_box = [i for i, b in enumerate(boxes) if b is None]
    if missing_box:
        raise FileFormatError(f"{gnd_path}: gnd[{missing_box[0]}] has no 'bbx'; CVNet's test crops every query")

    def paths(names: list[str]) -> list[Path]:
        out = [jpg / f"{n}.jpg" for n in names]
        for n, p in zip(names, out):
            if not p.is_file():
                raise FileFormatError(f"{p}: missing image {n!r} named by the ground truth {gnd_path}")
        return out

    return RevisitopImages(name, gnd_path, gnd, paths(gnd["qimlist"]), paths(gnd["imlist"]),
                           boxes)  # type: ignore[arg-type]


def read_distractors(folder: str | os.PathLike[str]) -> list[Path]:
    """The +1M distractor files: ``revisitop1m.txt`` (one path per line, extension included) under ``jpg/``.

    ``folder`` is revisitop's ``revisitop1m`` folder or its parent. The files are not statted
    here (a million of them): a missing one is an error naming it when it is read."""
    f = Path(os.path.expanduser(str(folder)))
    for base in (f, f / "revisitop1m"):
        if (base / DISTRACTOR_LIST).is_file():
            break
    else:
        raise ConfigError(f"--plus1m: no {DISTRACTOR_LIST} in {f} or {f / 'revisitop1m'} "
                          "(revisitop's distractor list, beside its jpg/ folder)")
    lst = base / DISTRACTOR_LIST
    try:
        lines = lst.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise FileFormatError(f"{lst}: not UTF-8 text (byte {e.start})") from None
    names = [ln.strip() for ln in lines if ln.strip()]
    if not names:
        raise FileFormatError(f"{lst}: lists no images")
    for n in names:
        if n.startswith("/") or ".." in Path(n).parts:
            raise FileFormatError(f"{lst}: {n!r} is not a path inside {base / 'jpg'}")
    return [base / "jpg" / n for n in names]


def read_bgr(path: str | os.PathLike[str]) -> Any:
    """Decode an image as the official CVNet test does: ``cv2.imread`` -> uint8 (H, W, 3) BGR.

    OpenCV decodes a truncated JPEG into a grey-filled image with only a warning, so a JPEG
    without its end-of-image marker is refused here; anything OpenCV cannot decode too. Both
    raise CorruptImageError naming the file.
    """
    from bitseek.data.image_io import CorruptImageError
    from bitseek.encode.multiscale import import_cv2

    p = Path(path)
    try:
        size = p.stat().st_size
        with p.open("rb") as fh:
            head = fh.read(3)
            fh.seek(max(0, size - _JPEG_TAIL))
            tail = fh.read()
    except FileNotFoundError:
        raise CorruptImageError(p, "missing image file") from None
    except IsADirectoryError:
        raise CorruptImageError(p, "is a directory, not an image file") from None
    if head[:2] == b"\xff\xd8" and b"\xff\xd9" not in tail:
        raise CorruptImageError(p, "truncated or corrupt JPEG (no end-of-image marker)")
    cv2 = import_cv2()
    im = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if im is None or im.ndim != 3 or im.shape[2] != 3 or 0 in im.shape:
        raise CorruptImageError(p, "corrupt or not an image (OpenCV cannot decode it)")
    return im


_JPEG_TAIL = 4096  # the end-of-image marker sits at the end, after at most some padding

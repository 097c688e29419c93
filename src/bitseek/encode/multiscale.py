"""CVNet's test-time protocol: BGR uint8 images, query crops, three scales, one averaged descriptor.

The rules are those of the official test (``test/dataset.py``, ``test/test_utils.py``), because the
published mAP depends on them:

* images are decoded by OpenCV as **BGR uint8** at their native resolution (no fixed size);
* a query is cropped to its ``bbx = [x1, y1, x2, y2]`` first. ``"truncate"`` is CVNet's
  ``im[int(y1):int(y2), int(x1):int(x2)]``; ``"round"`` is revisitop's example (PIL's ``crop``:
  Python ``round`` of each coordinate, zeros outside the image);
* each scale is resized **on the uint8 image** with ``cv2.resize(im, (0, 0), fx=s, fy=s)``, area
  interpolation below 1 and linear above; scale 1 is the image itself;
* then ``/ 255``, minus the ImageNet mean and over its std, in BGR order, all in float32;
* per scale the descriptor is L2-normalised, the scales are averaged and the mean normalised again.

OpenCV's resamplers are what make this exact: PIL's and torch's give other pixels.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from bitseek.errors import ConfigError, InputError

__all__ = ["BGR_MEAN", "BGR_STD", "CROP_RULES", "DEFAULT_SCALES", "MultiScaleImages", "aggregate_scales",
           "check_scales", "crop_to_box", "import_cv2", "multiscale_descriptors", "normalise_bgr", "pyramid",
           "pyramids_from_maps", "rerank_maps", "rerank_pyramids", "resize_scale", "shared_backbone_features"]

#: ImageNet statistics in BGR order (the official ``_MEAN``/``_SD``).
BGR_MEAN = (0.406, 0.456, 0.485)
BGR_STD = (0.225, 0.224, 0.229)
#: ``TEST.SCALE_LIST`` of the official config.
DEFAULT_SCALES = (0.7071, 1.0, 1.4142)
#: Query crop rules: CVNet's integer truncation, revisitop's rounding.
CROP_RULES = ("truncate", "round")


def import_cv2() -> Any:
    """``cv2``, or a one-line error saying which extra installs it."""
    try:
        import cv2
    except ImportError:
        raise ConfigError("the CVNet test protocol decodes and resizes with OpenCV: "
                          "pip install 'bitseek[cvnet]' (opencv-python-headless)") from None
    return cv2


def check_scales(scales: Sequence[float], where: str = "TEST.SCALE_LIST") -> tuple[float, ...]:
    """Positive finite scale factors, or a ConfigError naming ``where``."""
    try:
        out = tuple(float(s) for s in scales)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a list of numbers such as [0.7071, 1.0, 1.4142], got {scales!r}") \
            from None
    if not out or not all(math.isfinite(s) and s > 0 for s in out):
        raise ConfigError(f"{where}: scales must be positive numbers, got {list(scales)}")
    return out


def crop_to_box(im: np.ndarray, bbx: Sequence[float], rule: str = "truncate") -> np.ndarray:
    """Crop an (H, W, C) image to ``bbx = [x1, y1, x2, y2]`` by CVNet's or revisitop's rule.

    ``"truncate"`` slices with ``int()`` of each coordinate exactly as the official loader (numpy
    slicing semantics included). ``"round"`` reproduces PIL's ``Image.crop``: coordinates are
    rounded half to even and the parts of the box outside the image are zeros.
    """
    if rule not in CROP_RULES:
        raise ConfigError(f"query crop rule must be one of {list(CROP_RULES)}, got {rule!r}")
    x1, y1, x2, y2 = (float(v) for v in bbx)
    if rule == "truncate":
        out = im[int(y1):int(y2), int(x1):int(x2)]
    else:
        r = [int(round(v)) for v in (x1, y1, x2, y2)]
        w, h = max(0, r[2] - r[0]), max(0, r[3] - r[1])
        out = np.zeros((h, w) + im.shape[2:], dtype=im.dtype)
        sx, sy = max(r[0], 0), max(r[1], 0)
        ex, ey = min(r[2], im.shape[1]), min(r[3], im.shape[0])
        if ex > sx and ey > sy:
            out[sy - r[1]:ey - r[1], sx - r[0]:ex - r[0]] = im[sy:ey, sx:ex]
    if out.shape[0] == 0 or out.shape[1] == 0:
        raise InputError(f"query box {list(bbx)} leaves nothing of a {im.shape[1]}x{im.shape[0]} image")
    return np.ascontiguousarray(out)


def resize_scale(im: np.ndarray, scale: float) -> np.ndarray:
    """``cv2.resize`` of a uint8 image by ``scale``: INTER_AREA below 1, INTER_LINEAR above, none at 1."""
    if scale == 1.0:
        return im
    cv2 = import_cv2()
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    out = cv2.resize(im, dsize=(0, 0), fx=scale, fy=scale, interpolation=interp)
    if out.ndim == 2:  # OpenCV drops a trailing channel axis of 1
        out = out[:, :, None]
    return out


def normalise_bgr(im: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) BGR -> float32 (3, H, W): ``(x / 255 - mean) / std`` per channel, BGR statistics.

    The same float32 operations in the same order as the official ``_prepare_im``/``color_norm``,
    so the tensor is bit-identical to theirs."""
    if im.ndim != 3 or im.shape[2] != 3:
        raise InputError(f"expected an (H, W, 3) BGR image, got shape {im.shape}")
    x = im.astype(np.float32).transpose(2, 0, 1) / np.float32(255.0)
    for c in range(3):
        x[c] = x[c] - np.float32(BGR_MEAN[c])
        x[c] = x[c] / np.float32(BGR_STD[c])
    return np.ascontiguousarray(x)


def pyramid(im: np.ndarray, scales: Sequence[float]) -> list[np.ndarray]:
    """The network inputs of one image: one normalised (3, h, w) float32 array per scale."""
    return [normalise_bgr(resize_scale(im, s)) for s in scales]


def aggregate_scales(per_scale: Sequence[torch.Tensor]) -> torch.Tensor:
    """(B, D) descriptors per scale -> L2-normalised mean of the L2-normalised scales (official order)."""
    stacked = torch.stack([F.normalize(d, p=2, dim=1) for d in per_scale])
    return F.normalize(stacked.mean(dim=0), p=2, dim=1)


class MultiScaleImages(Dataset):
    """Images -> their per-scale network inputs, read by a ``loader(i) -> uint8 BGR (H, W, 3)``.

    ``boxes[i]`` (or None) crops image i by ``crop`` before scaling. Items are lists of (3, h, w)
    float32 tensors, one per scale, so a DataLoader's workers do the decoding and resizing."""

    variable_size = True

    def __init__(self, loader: Any, n: int, scales: Sequence[float] = DEFAULT_SCALES,
                 boxes: Sequence[Sequence[float] | None] | None = None, crop: str = "truncate") -> None:
        if crop not in CROP_RULES:
            raise ConfigError(f"query crop rule must be one of {list(CROP_RULES)}, got {crop!r}")
        if boxes is not None and len(boxes) != n:
            raise InputError(f"{len(boxes)} boxes for {n} images")
        self.loader, self.n, self.scales = loader, int(n), check_scales(scales)
        self.boxes, self.crop = boxes, crop

    def __len__(self) -> int:
        return self.n

    def image(self, i: int) -> np.ndarray:
        """Image i as uint8 BGR, cropped to its box if it has one."""
        im = self.loader(i)
        box = self.boxes[i] if self.boxes is not None else None
        return crop_to_box(im, box, self.crop) if box is not None else im

    def __getitem__(self, i: int) -> list[torch.Tensor]:
        return [torch.from_numpy(x) for x in pyramid(self.image(i), self.scales)]


def _items(images: MultiScaleImages, rows: Sequence[int], num_workers: int) -> Iterator[list[torch.Tensor]]:
    if num_workers <= 0:
        for i in rows:
            yield images[i]
        return
    sub = torch.utils.data.Subset(images, list(rows))
    yield from DataLoader(sub, batch_size=None, shuffle=False, num_workers=num_workers)


@torch.no_grad()
def multiscale_descriptors(model: Any, images: MultiScaleImages, rows: Sequence[int] | None = None, *,
                           device: torch.device | str = "cpu", num_workers: int = 0,
                           progress: Any = None) -> np.ndarray:
    """float32 (n, D) multi-scale global descriptors of ``rows`` (all by default), one image at a time
    as the official test (batch 1: the images differ in size). They stay on the device until the end."""
    dev = torch.device(device)
    rows = range(len(images)) if rows is None else rows
    descs: list[torch.Tensor] = []
    combine = getattr(model, "combine_scales", aggregate_scales)  # CVNet: mean, or SuperGlobal's max
    with _no_cudnn_benchmark():
        for xs in _items(images, rows, num_workers):
            per_scale = [model.global_descriptor(x.unsqueeze(0).to(dev)) for x in xs]
            descs.append(combine(per_scale))
            if progress is not None:
                progress.update(1)
    if not descs:
        return np.zeros((0, int(getattr(model, "dim", 0))), np.float32)
    x = torch.cat(descs).float().cpu().numpy()
    if not np.isfinite(x).all():
        raise InputError(f"{type(model).__name__}: non-finite global descriptors")
    return x


@torch.no_grad()
def rerank_maps(model: Any, images: MultiScaleImages, rows: Sequence[int] | None = None, *,
                device: torch.device | str = "cpu", num_workers: int = 0, progress: Any = None) -> list[np.ndarray]:
    """Each image's re-rank map, ``model.rerank_features`` of the unscaled (cropped) image, as
    (1024, h, w) float16: what the CVNet re-ranker reads back (the official re-rank uses scale 1 only)."""
    return _per_image(lambda f: f[0].to(torch.float16).cpu().numpy(), model, images, rows, device,
                      num_workers, progress)


def _same_backbone(models: Sequence[Any]) -> None:
    """Refuse networks whose backbones would compute different maps (weights or ReLU+ differ)."""
    first = models[0]
    ref = first.backbone.state_dict()
    for m in models[1:]:
        if getattr(m.cfg, "relup", False) != getattr(first.cfg, "relup", False):
            raise InputError("shared_backbone_features: the networks differ in ReLU+ (relup), so their backbones "
                             "compute different maps; extract them separately")
        other = m.backbone.state_dict()
        if other.keys() != ref.keys() or any(not torch.equal(ref[k], other[k]) for k in ref):
            raise InputError("shared_backbone_features: the networks' backbone weights differ; extract them separately")


@torch.no_grad()
def shared_backbone_features(models: Sequence[Any], images: MultiScaleImages, rows: Sequence[int] | None = None, *,
                             maps: bool = False, device: torch.device | str = "cpu", num_workers: int = 0,
                             progress: Any = None) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """One backbone pass per image and scale for several CVNets sharing one (frozen) backbone.

    Returns each network's :func:`multiscale_descriptors` and, with ``maps``, the :func:`rerank_maps`
    (taken from the scale-1 pass, which needs 1.0 among the scales): the same operations on the same
    maps, so the same numbers as extracting each network on its own, at a fraction of the cost."""
    if not models:
        raise InputError("shared_backbone_features: no networks given")
    _same_backbone(models)
    if maps and 1.0 not in images.scales:
        raise InputError(f"shared_backbone_features: re-rank maps come from scale 1.0, not among {list(images.scales)}")
    dev = torch.device(device)
    net = models[0]
    rows = range(len(images)) if rows is None else rows
    descs: list[list[torch.Tensor]] = [[] for _ in models]
    kept: list[np.ndarray] | None = [] if maps else None
    with _no_cudnn_benchmark():
        for xs in _items(images, rows, num_workers):
            per_scale: list[list[torch.Tensor]] = [[] for _ in models]
            for s, x in zip(images.scales, xs):
                inp = net._input(x.unsqueeze(0).to(dev))
                if kept is not None and s == 1.0:
                    f3, f4 = net.backbone.forward_intermediates(inp, (3, 4), pre_act=(3,))
                    kept.append(f3[0].to(torch.float16).cpu().numpy())
                else:
                    (f4,) = net.backbone.forward_intermediates(inp, (4,))
                for j, m in enumerate(models):
                    per_scale[j].append(m.descriptor_from_map(f4))
            for j, m in enumerate(models):
                descs[j].append(getattr(m, "combine_scales", aggregate_scales)(per_scale[j]))
            if progress is not None:
                progress.update(1)
    out = []
    for m, d in zip(models, descs):
        x = torch.cat(d).float().cpu().numpy() if d else np.zeros((0, int(getattr(m, "dim", 0))), np.float32)
        if not np.isfinite(x).all():
            raise InputError(f"{type(m).__name__}: non-finite global descriptors")
        out.append(x)
    return out, kept


def pyramids_from_maps(model: Any, maps: Sequence[Any], device: torch.device | str = "cpu") -> list[Any]:
    """Stored stage-3 maps -> ``model``'s convolved re-rank pyramids (levels float16), as :func:`rerank_pyramids`."""
    dtype = model.rerank.scale_convs[0].weight.dtype
    out: list[Any] = []
    with torch.no_grad():
        for f in maps:
            t = f if isinstance(f, torch.Tensor) else torch.from_numpy(np.asarray(f))
            out.append(_stored_pyramid(model, t.reshape(1, *t.shape[-3:]).to(device, dtype)))
    return out


def _stored_pyramid(model: Any, f: torch.Tensor) -> Any:
    """One (1, C, H, W) stage-3 map -> its re-rank pyramid with float16 levels on the host (what caches keep)."""
    from bitseek.models.cvnet.rerank import Pyramid

    (p,) = model.rerank.project(f)
    return Pyramid(p.size, tuple(lv.to(torch.float16).cpu().numpy() for lv in p.levels))


@torch.no_grad()
def rerank_pyramids(model: Any, images: MultiScaleImages, rows: Sequence[int] | None = None, *,
                    device: torch.device | str = "cpu", num_workers: int = 0, progress: Any = None) -> list[Any]:
    """Each image's convolved re-rank pyramid (``model.rerank.project`` of its :func:`rerank_maps`
    map, computed in the model's precision), levels stored float16: the 256-channel levels are less than
    half the bytes of the 1024-channel map, and the re-ranker skips their 3x3 convs per pair."""
    return _per_image(lambda f: _stored_pyramid(model, f), model, images, rows, device, num_workers, progress)


def _per_image(fn: Any, model: Any, images: MultiScaleImages, rows: Sequence[int] | None, device: Any,
               num_workers: int, progress: Any) -> list[Any]:
    dev = torch.device(device)
    one = MultiScaleImages(images.loader, len(images), (1.0,), images.boxes, images.crop)
    rows = range(len(one)) if rows is None else rows
    out: list[Any] = []
    with _no_cudnn_benchmark():
        for (x,) in _items(one, rows, num_workers):
            out.append(fn(model.rerank_features(x.unsqueeze(0).to(dev))))
            if progress is not None:
                progress.update(1)
    return out


@contextlib.contextmanager
def _no_cudnn_benchmark() -> Iterator[None]:
    """The official test runs with ``cudnn.benchmark = False`` (deterministic kernel choice)."""
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old

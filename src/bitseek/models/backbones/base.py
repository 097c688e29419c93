"""The backbone contract: feature maps at chosen depths (timm's ``out_indices`` / ``feature_info``).

Every backbone numbers its feature points the same way: index 0 is the stem's output, indices 1-4 the
outputs of stages 1-4 (``layer1`` .. ``layer4`` of a ResNet; ``stages[0..3]`` of GC ViT).
``feature_info`` describes all of them (channels, reduction = stride w.r.t. the input, module name).
``out_indices`` picks what ``forward`` returns; the default ``(3, 4)`` is the (stage-3, stage-4) pair
CSCE-Net and DOLG read. ``forward_intermediates(x, indices, pre_act=...)`` is the general call: it
stops after the deepest index asked for and, for indices in ``pre_act``, returns the last block's
output *before* its final activation (CVNet's re-ranker reads stage 3 that way).

Weights always come from a local file (:func:`read_state_dict`); nothing is downloaded.
Use :func:`build_backbone` (``name``, optional ``weights`` path, ``out_indices``, backbone arguments).
"""

from __future__ import annotations

import abc
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from bitseek.errors import ConfigError, FileFormatError
from bitseek.registry import BACKBONES
from bitseek import weights
from bitseek.weights import load_state_into

__all__ = [
    "Backbone",
    "FeatureInfo",
    "FeaturePoint",
    "build_backbone",
    "list_backbones",
    "load_backbone_weights",
    "read_state_dict",
    "register_backbone",
]

DEFAULT_OUT_INDICES = (3, 4)


@dataclass(frozen=True)
class FeaturePoint:
    """One place a backbone can return a map from (timm's ``feature_info`` entry)."""

    num_chs: int
    reduction: int
    module: str


class FeatureInfo(tuple):
    """The feature points of a backbone, indexed 0 (stem) .. 4 (stage 4)."""

    def __new__(cls, points: Iterable[FeaturePoint]) -> "FeatureInfo":
        return super().__new__(cls, tuple(points))

    def channels(self, indices: Sequence[int] | None = None) -> tuple[int, ...]:
        return tuple(self[i].num_chs for i in (range(len(self)) if indices is None else indices))

    def reduction(self, indices: Sequence[int] | None = None) -> tuple[int, ...]:
        return tuple(self[i].reduction for i in (range(len(self)) if indices is None else indices))

    def module_name(self, indices: Sequence[int] | None = None) -> tuple[str, ...]:
        return tuple(self[i].module for i in (range(len(self)) if indices is None else indices))


class Backbone(nn.Module, metaclass=abc.ABCMeta):
    """A network returning feature maps (NCHW) at ``out_indices``.

    Subclasses set ``feature_info`` in ``__init__`` and implement ``forward_intermediates`` and
    ``_spatial_sizes``. ``ignored_weight_prefixes`` are classifier keys a pretrained file may carry
    but we do not use.
    """

    feature_info: FeatureInfo
    ignored_weight_prefixes: tuple[str, ...] = ()
    _out_indices: tuple[int, ...] = DEFAULT_OUT_INDICES

    # ------------------------------------------------------------------ selection
    def check_indices(self, indices: Iterable[int], what: str = "out_indices") -> tuple[int, ...]:
        """Validated, order-preserving tuple of feature indices (duplicates are an error)."""
        idx = tuple(int(i) for i in indices)
        n = len(self.feature_info)
        bad = [i for i in idx if not 0 <= i < n]
        if not idx or bad or len(set(idx)) != len(idx):
            raise ConfigError(f"backbone {type(self).__name__}: {what} must be distinct indices in 0..{n - 1} "
                              f"(0 = stem, 1-4 = stages), got {list(idx)}")
        return idx

    @property
    def out_indices(self) -> tuple[int, ...]:
        return self._out_indices

    @out_indices.setter
    def out_indices(self, indices: Iterable[int]) -> None:
        self._out_indices = self.check_indices(indices)

    @property
    def out_channels(self) -> tuple[int, ...]:
        """Channel counts of the maps ``forward`` returns."""
        return self.feature_info.channels(self.out_indices)

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """The maps at ``out_indices`` (by default ``(stage3, stage4)``)."""
        return tuple(self.forward_intermediates(x, self.out_indices))

    @abc.abstractmethod
    def forward_intermediates(self, x: Tensor, indices: Sequence[int] | None = None, *,
                              pre_act: Sequence[int] = ()) -> list[Tensor]:
        """Maps at ``indices`` (default ``out_indices``), in that order; computation stops after the
        deepest one. For indices listed in ``pre_act`` the map is taken before the final activation
        of that stage's last block."""

    @abc.abstractmethod
    def _spatial_sizes(self, hw: tuple[int, int]) -> list[tuple[int, int]]:
        """Spatial size of every feature point for an input of size ``hw``."""

    def feature_sizes(self, image_size: int | Sequence[int],
                      indices: Sequence[int] | None = None) -> tuple[tuple[int, int], ...]:
        """Spatial sizes of the maps at ``indices`` (default ``out_indices``) for ``image_size``."""
        sizes = self._spatial_sizes(_pair(image_size))
        idx = self.out_indices if indices is None else self.check_indices(indices, "indices")
        return tuple(sizes[i] for i in idx)

    def load_pretrained(self, path: str | Path) -> None:
        """Load weights in this backbone's own (torchvision/timm) naming from a local file."""
        self.load_pretrained_state(read_state_dict(path), str(path))

    def load_pretrained_state(self, sd: dict[str, Tensor], source: str = "pretrained weights") -> None:
        """Load a state dict in this backbone's own naming (read by the caller, e.g. ``create_model``)."""
        load_backbone_state(self, sd, source, self.ignored_weight_prefixes)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    if len(size) != 2:
        raise ConfigError(f"image size must be an int or (height, width), got {size!r}")
    return (int(size[0]), int(size[1]))


# --------------------------------------------------------------------------- weights


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A flat name -> tensor mapping from a local weights file (:func:`bitseek.weights.read_state_dict`)."""
    return weights.read_state_dict(path)


def load_backbone_weights(module: nn.Module, path: str | Path, ignore_prefixes: Iterable[str] = ()) -> None:
    """Strictly load ``path`` into ``module``; list missing/unexpected/mis-shaped keys on failure.

    Keys under ``ignore_prefixes`` (the ImageNet classifier) are dropped. ``num_batches_tracked``
    buffers may be absent (torchvision's original ResNet files predate them).
    """
    load_backbone_state(module, read_state_dict(path), str(path), ignore_prefixes)


def load_backbone_state(module: nn.Module, sd: dict[str, Tensor], source: str,
                        ignore_prefixes: Iterable[str] = ()) -> None:
    """:func:`load_backbone_weights` for a state dict already read (the caller owns the file)."""
    prefixes = tuple(ignore_prefixes)
    sd = {k: v for k, v in sd.items() if not (prefixes and k.startswith(prefixes))}
    load_state_into(module, sd, source, optional_suffixes=("num_batches_tracked",), cast=True)


# --------------------------------------------------------------------------- registry

def register_backbone(name: str) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Register a backbone factory (keyword arguments -> Backbone) in :data:`bitseek.registry.BACKBONES`."""
    return BACKBONES.register(name)


def list_backbones() -> list[str]:
    return BACKBONES.names()


def build_backbone(name: str, weights: str | Path | None = None, *, image_size: int | None = None,
                   out_indices: Sequence[int] | None = None, **kwargs: Any) -> Backbone:
    """Build a registered backbone, optionally loading local pretrained ``weights``.

    ``image_size`` is passed only to backbones with a fixed input size (GC ViT); fully
    convolutional ResNets accept any size. ``out_indices`` selects what ``forward`` returns
    (default ``(3, 4)``). Unknown keyword arguments are a ConfigError.
    """
    factory = BACKBONES.get(name).factory
    params = inspect.signature(factory).parameters
    bad = sorted(k for k in kwargs if k not in params)
    if bad:
        valid = [k for k in params if k != "image_size"] + ["out_indices"]
        raise ConfigError(f"backbone {name!r}: unknown argument(s) {bad} (valid: {', '.join(valid)})")
    if image_size is not None and "image_size" in params:
        kwargs["image_size"] = image_size
    net = factory(**kwargs)
    if out_indices is not None:
        net.out_indices = out_indices
    if weights:
        net.load_pretrained(weights)
    return net

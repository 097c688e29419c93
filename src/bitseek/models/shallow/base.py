"""What every classic hashing baseline shares: the input view, streaming moments, fit/encode/state.

The baselines are fitted in closed form (or by ITQ's alternating minimisation), not trained by SGD,
so they are deliberately *not* ``nn.Module``s: the pipeline calls ``fit`` and then ``encode``.

* Input view (:func:`vectors`): video frame features ``(N, T, D)`` are mean-pooled over frames,
  vectors ``(N, D)`` are used as they are, images ``(N, C, H, W)`` are flattened to pixel vectors.
  A batch gives its ``"feats"`` or, for image datasets, its ``"image"``.
* ``fit(features)`` takes any of those shapes as a numpy array, a torch tensor or any row-sliceable
  array with ``.shape`` (an h5py dataset, :class:`bitseek.data.h5features.H5Shards`). Statistics are
  accumulated in float64 over row chunks, so a file larger than memory can be fitted.
* ``encode(batch)`` returns (B, bits) float32 ±1 codes (an exact 0 projection maps to +1), computed
  once in torch on the input's device: torch in, torch out; numpy in, numpy out.
* ``state_dict``/``load_state_dict`` let the engine's checkpoint layout hold a fitted baseline.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from bitseek.errors import ConfigError, InputError

__all__ = ["ShallowConfig", "ShallowHash", "pooled_chunks", "vectors", "MAX_COVARIANCE_DIM"]

_CHUNK = 4096
#: a D x D float64 covariance above this many dimensions (2 GiB at 16384) is refused with advice
MAX_COVARIANCE_DIM = 16384


@dataclass
class ShallowConfig:
    """Shared by every shallow baseline; ``feature_dim`` is filled in by ``fit`` (0 = not yet known)."""

    name: str = "lsh"
    bits: int = 64
    seed: int = 0
    feature_dim: int = 0

    def __post_init__(self) -> None:
        if self.bits < 1:
            raise ConfigError(f"model.bits must be >= 1, got {self.bits}")
        if self.feature_dim < 0:
            raise ConfigError(f"model.feature_dim must be >= 0 (0 = taken from the data), got {self.feature_dim}")


# --------------------------------------------------------------------------- input view


def _flatten(x: Any, ndim: int, shape: tuple[int, ...], where: str) -> Any:
    """Frames mean-pooled, images flattened; works for numpy arrays and tensors alike."""
    if ndim == 3:
        return x.mean(1) if isinstance(x, Tensor) else x.mean(axis=1)
    if ndim == 4:
        return x.reshape(shape[0], -1)
    if ndim != 2:
        raise InputError(f"{where}: expected (N, D) vectors, (N, T, D) frame features or (N, C, H, W) images, "
                         f"got shape {shape}")
    return x


def vectors(batch: dict[str, Any] | Any, where: str = "shallow") -> Any:
    """The (B, D) vectors a baseline sees in a batch: ``"feats"`` (pooled) or ``"image"`` (flattened)."""
    if isinstance(batch, dict):
        if "feats" in batch:
            x = batch["feats"]
        elif "image" in batch:
            x = batch["image"]
        else:
            raise InputError(f"{where}: batch has neither 'feats' nor 'image' (keys: {sorted(batch)})")
    else:
        x = batch
    if not isinstance(x, Tensor):
        x = np.asarray(x)
    return _flatten(x, x.ndim, tuple(x.shape), where)


def pooled_chunks(features: Any, chunk: int = _CHUNK) -> Iterator[np.ndarray]:
    """Float64 (n, D) blocks of :func:`vectors` rows from an array, tensor or row-sliceable source."""
    shape = getattr(features, "shape", None)
    if shape is None:
        features = np.asarray(features)
        shape = features.shape
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3, 4):
        raise InputError(f"fit(): expected (N, D), (N, T, D) or (N, C, H, W) features, got shape {shape}")
    n = shape[0]
    for s in range(0, n, chunk):
        block = features[s: min(s + chunk, n)]
        block = block.detach().to("cpu", torch.float64).numpy() if isinstance(block, Tensor) \
            else np.asarray(block, dtype=np.float64)
        block = _flatten(block, block.ndim, block.shape, "fit()")
        if not np.isfinite(block).all():
            raise InputError("fit(): features contain NaN or inf")
        yield block


def moments(features: Any) -> tuple[int, np.ndarray, np.ndarray]:
    """Row count, mean and covariance (float64), merged chunk by chunk (Chan et al.'s update)."""
    n, mean, m2 = 0, None, None
    for x in pooled_chunks(features):
        nb = x.shape[0]
        if nb == 0:
            continue
        if x.shape[1] > MAX_COVARIANCE_DIM:
            raise InputError(f"fit(): {x.shape[1]}-d vectors need a {x.shape[1]}x{x.shape[1]} covariance "
                             f"(over {MAX_COVARIANCE_DIM}-d is refused); for images lower data.image_size "
                             f"(e.g. 32 px RGB = 3072-d) or fit on backbone features")
        mb = x.mean(axis=0)
        xc = x - mb
        m2b = xc.T @ xc
        if mean is None:
            n, mean, m2 = nb, mb, m2b
            continue
        delta = mb - mean
        tot = n + nb
        m2 = m2 + m2b + np.outer(delta, delta) * (n * nb / tot)
        mean = mean + delta * (nb / tot)
        n = tot
    if mean is None or m2 is None or n < 2:
        raise InputError(f"fit(): need at least 2 training vectors, got {n}")
    return n, mean, m2 / (n - 1)


def top_eigvecs(cov: np.ndarray, k: int) -> np.ndarray:
    """Top-k principal directions (D, k), each signed so its largest-magnitude entry is positive."""
    vals, vecs = np.linalg.eigh(cov)
    top = vecs[:, np.argsort(vals, kind="stable")[::-1][:k]]
    flip = np.sign(top[np.abs(top).argmax(axis=0), np.arange(k)])
    return top * np.where(flip == 0, 1.0, flip)


def signs(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, 1.0, -1.0)


def need_dims(name: str, bits: int, dim: int, n: int) -> None:
    if bits > dim:
        raise InputError(f"{name}: {bits} bits need at least {bits} feature dimensions, features are {dim}-d")
    if bits > n - 1:
        raise InputError(f"{name}: {bits} bits need more than {bits} training vectors, got {n}")


# --------------------------------------------------------------------------- base class


class ShallowHash(abc.ABC):
    """Common fit/encode/state machinery: codes = sign(f((x - mean) @ proj)) for a per-method f."""

    #: names of the numpy arrays that make up the fitted state
    state_keys: tuple[str, ...] = ("mean", "proj")

    def __init__(self, cfg: ShallowConfig) -> None:
        self.cfg = cfg
        self.bits = int(cfg.bits)
        self.state: dict[str, np.ndarray] = {}
        self._on_device: dict[torch.device, dict[str, Tensor]] = {}
        if cfg.feature_dim > 0:  # a shaped, unfitted state, so a checkpoint loader can fill it
            self.state = {k: np.zeros(s, dtype=np.float32) for k, s in self._state_shapes(cfg.feature_dim).items()}
        self._fitted = False

    # -- per-method hooks
    def _state_shapes(self, dim: int) -> dict[str, tuple[int, ...]]:
        return {"mean": (dim,), "proj": (dim, self.bits)}

    @abc.abstractmethod
    def _fit(self, features: Any) -> None:
        """Set ``self.state`` (float64 arrays are fine; ``fit`` stores them as float32)."""

    def _project(self, x: Tensor, st: dict[str, Tensor]) -> Tensor:
        """Real-valued projections whose signs are the codes (float32, on ``x``'s device)."""
        return (x - st["mean"]) @ st["proj"]

    # -- public API
    @property
    def fitted(self) -> bool:
        return self._fitted

    @property
    def feature_dim(self) -> int:
        return int(self.state["mean"].shape[0]) if "mean" in self.state else 0

    def input_spec(self) -> dict[str, Any]:
        """What this model needs from the data: vectors of ``feature_dim`` (0 = taken from the data)."""
        return {"feature_dim": self.feature_dim}

    def fit(self, features: Any) -> "ShallowHash":
        """Fit on (N, D), (N, T, D) or (N, C, H, W) features (see :func:`vectors`); returns self."""
        self._fit(features)
        self.state = {k: np.ascontiguousarray(v, dtype=np.float32) if v.dtype.kind == "f" else v
                      for k, v in self.state.items()}
        self._on_device.clear()
        self.cfg = dataclasses.replace(self.cfg, feature_dim=self.feature_dim)
        self._fitted = True
        return self

    def _state_on(self, device: torch.device) -> dict[str, Tensor]:
        st = self._on_device.get(device)
        if st is None:
            st = self._on_device[device] = {k: torch.as_tensor(v, device=device) for k, v in self.state.items()}
        return st

    def encode(self, batch: dict[str, Any] | Any) -> Any:
        """(B, bits) float32 ±1 codes of a batch's vectors (:func:`vectors`)."""
        x = vectors(batch, f"{self.cfg.name}.encode")
        as_numpy = not isinstance(x, Tensor)
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) if as_numpy else x.detach().float()
        if as_numpy and not torch.isfinite(t).all():
            raise InputError(f"{self.cfg.name}.encode: features contain NaN or inf")
        if not self._fitted:
            raise InputError(f"{self.cfg.name}: encode() before fit(); call fit(train_features) first")
        if int(t.shape[1]) != self.feature_dim:
            raise InputError(f"{self.cfg.name}: fitted on {self.feature_dim}-d features, got {int(t.shape[1])}-d")
        codes = torch.where(self._project(t, self._state_on(t.device)) >= 0, 1.0, -1.0).to(torch.float32)
        return codes.numpy() if as_numpy else codes

    __call__ = encode

    # -- checkpoint compatibility (tensors in, tensors out)
    def state_dict(self) -> dict[str, Tensor]:
        if not self.state:  # neither fitted nor shaped for a checkpoint to fill
            raise InputError(f"{self.cfg.name}: nothing to save before fit()")
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.state.items()}

    def load_state_dict(self, sd: dict[str, Any], strict: bool = True) -> None:
        missing = [k for k in self.state_keys if k not in sd]
        extra = [k for k in sd if k not in self.state_keys]
        if missing or (strict and extra):
            raise InputError(f"{self.cfg.name}: state has missing keys {missing} / unexpected keys {extra}")
        state = {k: (sd[k].detach().cpu().numpy() if isinstance(sd[k], Tensor) else np.asarray(sd[k]))
                 for k in self.state_keys}
        dim = state["mean"].shape[0]
        for k, shape in self._state_shapes(dim).items():
            if tuple(state[k].shape) != shape:
                raise InputError(f"{self.cfg.name}: state {k!r} has shape {state[k].shape}, expected {shape}")
        self.state = state
        self._on_device.clear()
        self.cfg = dataclasses.replace(self.cfg, feature_dim=dim)
        self._fitted = True

    def to(self, *args: Any, **kwargs: Any) -> "ShallowHash":
        """Codes are computed on the device of the input; nothing to move (checkpoint loaders call this)."""
        return self

    def eval(self) -> "ShallowHash":
        return self

    def __repr__(self) -> str:
        state = f"fitted on {self.feature_dim}-d" if self._fitted else "not fitted"
        return f"{type(self).__name__}(bits={self.bits}, seed={self.cfg.seed}, {state})"

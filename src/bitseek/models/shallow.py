"""Classic unsupervised hashing baselines on mean-pooled frame features: LSH, PCAH, ITQ, SH.

They are fitted in closed form (or by ITQ's alternating minimisation), not trained by SGD, so they
are deliberately *not* ``nn.Module``s: the pipeline calls ``fit`` and then ``encode``.

* ``fit(features)`` takes (N, D) vectors or (N, T, D) frame features (mean-pooled over frames),
  as a numpy array, a torch tensor or any row-sliceable array with ``.shape`` (an h5py dataset,
  :class:`bitseek.data.h5features.H5Shards`). Statistics are accumulated in float64 over row
  chunks, so a file larger than memory can be fitted: one pass for the mean and covariance,
  a second for the projections ITQ and SH need.
* ``encode(batch)`` takes ``{"feats": (B, T, D) or (B, D)}`` and returns (B, bits) float32 ±1
  codes (an exact 0 projection maps to +1). **Torch in, torch out** (same device); numpy in,
  numpy out. This is the same contract as the deep models' ``encode``.
* ``save(dir)`` / ``load(dir)`` use the checkpoint layout of the training engine
  (``model.safetensors`` + ``config.json``), so ``bitseek.train.checkpoint.load_model`` also
  rebuilds a fitted baseline.

References: LSH/SimHash (Charikar 2002), PCAH, ITQ (Gong & Lazebnik, CVPR 2011 / TPAMI 2013),
Spectral Hashing (Weiss, Torralba & Fergus, NIPS 2008).
"""

from __future__ import annotations

import abc
import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from bitseek.errors import ConfigError, InputError
from bitseek.registry import register_model

__all__ = [
    "ShallowConfig",
    "ITQConfig",
    "ShallowHash",
    "LSH",
    "PCAH",
    "ITQ",
    "SpectralHashing",
    "pooled_chunks",
]

_CHUNK = 4096


@dataclass
class ShallowConfig:
    """Shared by every shallow baseline; ``feature_dim`` is filled in by ``fit`` (0 = not yet known)."""

    name: str = "lsh"
    bits: int = 64
    seed: int = 0
    feature_dim: int = 0


@dataclass
class ITQConfig(ShallowConfig):
    name: str = "itq"
    iterations: int = 50  # Gong & Lazebnik use 50


# --------------------------------------------------------------------------- input handling


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _pool(block: np.ndarray, where: str) -> np.ndarray:
    if block.ndim == 3:
        block = block.mean(axis=1)
    elif block.ndim != 2:
        raise InputError(f"{where}: expected (N, D) or (N, T, D) features, got shape {block.shape}")
    if not np.isfinite(block).all():
        raise InputError(f"{where}: features contain NaN or inf")
    return block


def pooled_chunks(features: Any, chunk: int = _CHUNK) -> Iterator[np.ndarray]:
    """Float64 (n, D) blocks of mean-pooled rows from an array, tensor or row-sliceable source."""
    shape = getattr(features, "shape", None)
    if shape is None:
        features = np.asarray(features)
        shape = features.shape
    if len(shape) not in (2, 3):
        raise InputError(f"fit(): expected (N, D) or (N, T, D) features, got shape {tuple(shape)}")
    n = int(shape[0])
    for s in range(0, n, chunk):
        yield _pool(_as_numpy(features[s: min(s + chunk, n)]), "fit()")


def _moments(features: Any) -> tuple[int, np.ndarray, np.ndarray]:
    """Row count, mean and covariance (float64), merged chunk by chunk (Chan et al.'s update)."""
    n, mean, m2 = 0, None, None
    for x in pooled_chunks(features):
        nb = x.shape[0]
        if nb == 0:
            continue
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
    if mean is None or n < 2:
        raise InputError(f"fit(): need at least 2 training vectors, got {n}")
    return n, mean, m2 / (n - 1)


def _top_eigvecs(cov: np.ndarray, k: int) -> np.ndarray:
    """Top-k principal directions (D, k), each signed so its largest-magnitude entry is positive."""
    vals, vecs = np.linalg.eigh(cov)
    top = vecs[:, np.argsort(vals, kind="stable")[::-1][:k]]
    flip = np.sign(top[np.abs(top).argmax(axis=0), np.arange(k)])
    return top * np.where(flip == 0, 1.0, flip)


def _signs(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, 1.0, -1.0)


# --------------------------------------------------------------------------- base class


class ShallowHash(abc.ABC):
    """Common fit/encode/save machinery: codes = sign(f((x - mean) @ proj)) for a per-method f."""

    #: names of the numpy arrays that make up the fitted state
    state_keys: tuple[str, ...] = ("mean", "proj")

    def __init__(self, cfg: ShallowConfig) -> None:
        if cfg.bits < 1:
            raise ConfigError(f"model.bits must be >= 1, got {cfg.bits}")
        self.cfg = cfg
        self.bits = int(cfg.bits)
        self.state: dict[str, np.ndarray] = {}
        if cfg.feature_dim > 0:  # a shaped, unfitted state, so a checkpoint loader can fill it
            self.state = {k: np.zeros(s, dtype=np.float32) for k, s in self._state_shapes(cfg.feature_dim).items()}
        self._fitted = False

    # -- per-method hooks
    def _state_shapes(self, dim: int) -> dict[str, tuple[int, ...]]:
        return {"mean": (dim,), "proj": (dim, self.bits)}

    @abc.abstractmethod
    def _fit(self, features: Any) -> None:
        """Set ``self.state`` (float64 arrays are fine; ``fit`` stores them as float32)."""

    def _codes_np(self, x: np.ndarray) -> np.ndarray:
        return _signs((x - self.state["mean"]) @ self.state["proj"])

    def _codes_torch(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.state["mean"], device=x.device)
        proj = torch.as_tensor(self.state["proj"], device=x.device)
        y = (x - mean) @ proj
        return torch.where(y >= 0, 1.0, -1.0).to(torch.float32)

    # -- public API
    @property
    def fitted(self) -> bool:
        return self._fitted

    @property
    def feature_dim(self) -> int:
        return int(self.state["mean"].shape[0]) if "mean" in self.state else 0

    def fit(self, features: Any) -> "ShallowHash":
        """Fit on (N, D) or (N, T, D) features (frames are mean-pooled); returns self."""
        self._fit(features)
        self.state = {k: np.ascontiguousarray(v, dtype=np.float32) if v.dtype.kind == "f" else v
                      for k, v in self.state.items()}
        self.cfg = dataclasses.replace(self.cfg, feature_dim=self.feature_dim)
        self._fitted = True
        return self

    def _check_ready(self, dim: int) -> None:
        if not self._fitted:
            raise InputError(f"{self.cfg.name}: encode() before fit(); call fit(train_features) first")
        if dim != self.feature_dim:
            raise InputError(f"{self.cfg.name}: fitted on {self.feature_dim}-d features, got {dim}-d")

    def encode(self, batch: dict[str, Any] | Any) -> Any:
        """(B, bits) float32 ±1 codes of ``batch["feats"]`` ((B, T, D) mean-pooled, or (B, D))."""
        feats = batch["feats"] if isinstance(batch, dict) else batch
        if isinstance(feats, torch.Tensor):
            x = feats.detach().to(torch.float32)
            if x.ndim == 3:
                x = x.mean(dim=1)
            if x.ndim != 2:
                raise InputError(f"{self.cfg.name}.encode: feats must be (B, T, D) or (B, D), got {tuple(feats.shape)}")
            self._check_ready(int(x.shape[1]))
            return self._codes_torch(x)
        x = _pool(np.asarray(feats, dtype=np.float32), f"{self.cfg.name}.encode")
        self._check_ready(int(x.shape[1]))
        return self._codes_np(x).astype(np.float32)

    __call__ = encode

    # -- torch-checkpoint compatibility (tensors in, tensors out)
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.state.items()}

    def load_state_dict(self, sd: dict[str, Any], strict: bool = True) -> None:
        missing = [k for k in self.state_keys if k not in sd]
        extra = [k for k in sd if k not in self.state_keys]
        if missing or (strict and extra):
            raise InputError(f"{self.cfg.name}: state has missing keys {missing} / unexpected keys {extra}")
        state = {k: (sd[k].detach().cpu().numpy() if isinstance(sd[k], torch.Tensor) else np.asarray(sd[k]))
                 for k in self.state_keys}
        dim = state["mean"].shape[0]
        for k, shape in self._state_shapes(dim).items():
            if tuple(state[k].shape) != shape:
                raise InputError(f"{self.cfg.name}: state {k!r} has shape {state[k].shape}, expected {shape}")
        self.state = state
        self.cfg = dataclasses.replace(self.cfg, feature_dim=dim)
        self._fitted = True

    def to(self, *args: Any, **kwargs: Any) -> "ShallowHash":
        """Codes are computed on the device of the input; nothing to move."""
        return self

    def eval(self) -> "ShallowHash":
        return self

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``model.safetensors`` + ``config.json`` (the engine's checkpoint layout)."""
        from bitseek.train.checkpoint import save_model

        if not self._fitted:
            raise InputError(f"{self.cfg.name}: nothing to save before fit()")
        return save_model(directory, self, self.cfg)

    @staticmethod
    def load(directory: str | os.PathLike[str]) -> "ShallowHash":
        """Rebuild a fitted baseline saved with :meth:`save`."""
        from bitseek.train.checkpoint import load_model

        model = load_model(directory)
        if not isinstance(model, ShallowHash):
            raise InputError(f"{directory}: holds a {type(model).__name__}, not a shallow baseline")
        return model

    def __repr__(self) -> str:
        state = f"fitted on {self.feature_dim}-d" if self._fitted else "not fitted"
        return f"{type(self).__name__}(bits={self.bits}, seed={self.cfg.seed}, {state})"


def _need_dims(name: str, bits: int, dim: int, n: int) -> None:
    if bits > dim:
        raise InputError(f"{name}: {bits} bits need at least {bits} feature dimensions, features are {dim}-d")
    if bits > n - 1:
        raise InputError(f"{name}: {bits} bits need more than {bits} training vectors, got {n}")


# --------------------------------------------------------------------------- the four methods


class LSH(ShallowHash):
    """Random-hyperplane LSH (SimHash) on zero-centred features: sign((x - mean) @ W), W ~ N(0, 1)."""

    def _fit(self, features: Any) -> None:
        n, mean = 0, None
        for x in pooled_chunks(features):
            s = x.sum(axis=0)
            mean = s if mean is None else mean + s
            n += x.shape[0]
        if mean is None or n == 0:
            raise InputError("lsh: fit() got no training vectors")
        rng = np.random.default_rng(self.cfg.seed)
        self.state = {"mean": mean / n, "proj": rng.standard_normal((mean.shape[0], self.bits))}


class PCAH(ShallowHash):
    """PCA hashing: sign of the projections on the top-``bits`` principal directions."""

    def _fit(self, features: Any) -> None:
        n, mean, cov = _moments(features)
        _need_dims("pcah", self.bits, mean.shape[0], n)
        self.state = {"mean": mean, "proj": _top_eigvecs(cov, self.bits)}


class ITQ(ShallowHash):
    """Iterative Quantization: PCA to ``bits`` dims, then the rotation R minimising ||B - VR||_F.

    Alternates B = sign(VR) and the orthogonal Procrustes step: with the SVD BᵀV = S Ω Ŝᵀ, the best
    rotation is R = Ŝ Sᵀ. Each half-step cannot increase the loss, so ``loss_history`` (the
    quantisation loss after each iteration) is non-increasing.
    """

    def __init__(self, cfg: ShallowConfig) -> None:
        super().__init__(cfg)
        self.iterations = int(getattr(cfg, "iterations", 50))
        if self.iterations < 0:
            raise ConfigError(f"model.iterations must be >= 0, got {self.iterations}")
        self.loss_history: list[float] = []
        self.rotation: np.ndarray | None = None

    def _fit(self, features: Any) -> None:
        n, mean, cov = _moments(features)
        _need_dims("itq", self.bits, mean.shape[0], n)
        w = _top_eigvecs(cov, self.bits)
        v = np.concatenate([(x - mean) @ w for x in pooled_chunks(features)])  # (N, bits)
        rng = np.random.default_rng(self.cfg.seed)
        r, _ = np.linalg.qr(rng.standard_normal((self.bits, self.bits)))
        self.loss_history = []
        for _ in range(self.iterations):
            b = _signs(v @ r)
            s, _, sht = np.linalg.svd(b.T @ v)
            r = sht.T @ s.T
            self.loss_history.append(float(np.square(b - v @ r).sum()))
        self.rotation = r
        self.state = {"mean": mean, "proj": w @ r}

    def quantization_loss(self, features: Any) -> float:
        """||sign(V R) - V R||_F² of ``features`` under the fitted PCA + rotation."""
        if not self._fitted:
            raise InputError("itq: quantization_loss() before fit()")
        total = 0.0
        for x in pooled_chunks(features):
            y = (x - self.state["mean"].astype(np.float64)) @ self.state["proj"].astype(np.float64)
            total += float(np.square(_signs(y) - y).sum())
        return total


class SpectralHashing(ShallowHash):
    """Spectral Hashing: PCA, a box per direction, the lowest-frequency 1-D Laplacian eigenfunctions.

    Bit k thresholds cos(m_k π (y_{j_k} - a_{j_k}) / (b_{j_k} - a_{j_k})) (= sin(π/2 + …)), where
    (j_k, m_k) are the ``bits`` (direction, mode) pairs with the smallest (m / (b - a))², the
    constant mode excluded; [a, b] is the range of the training projections.
    """

    state_keys = ("mean", "proj", "low", "span", "dims", "freqs")

    def _state_shapes(self, dim: int) -> dict[str, tuple[int, ...]]:
        k = min(self.bits, dim)
        return {"mean": (dim,), "proj": (dim, k), "low": (k,), "span": (k,), "dims": (self.bits,),
                "freqs": (self.bits,)}

    def _fit(self, features: Any) -> None:
        n, mean, cov = _moments(features)
        npca = min(self.bits, mean.shape[0])
        w = _top_eigvecs(cov, npca)
        lo = np.full(npca, np.inf)
        hi = np.full(npca, -np.inf)
        for x in pooled_chunks(features):
            y = (x - mean) @ w
            lo, hi = np.minimum(lo, y.min(axis=0)), np.maximum(hi, y.max(axis=0))
        eps = np.finfo(np.float64).eps
        lo, hi = lo - eps, hi + eps
        span = np.maximum(hi - lo, 1e-12)
        # candidate modes 1..max_mode per direction, longer directions allowed more modes
        max_mode = np.ceil((self.bits + 1) * span / span.max()).astype(np.int64)
        dims = np.concatenate([np.full(m, j) for j, m in enumerate(max_mode)])
        modes = np.concatenate([np.arange(1, m + 1) for m in max_mode])
        eig = (modes / span[dims]) ** 2  # ∝ Laplacian eigenvalue of mode m on direction j
        order = np.argsort(eig, kind="stable")[: self.bits]
        if order.size < self.bits:
            raise InputError(f"sh: only {order.size} modes available for {self.bits} bits")
        self.state = {"mean": mean, "proj": w, "low": lo, "span": span,
                      "dims": dims[order].astype(np.int64), "freqs": modes[order].astype(np.float32)}

    def _codes_np(self, x: np.ndarray) -> np.ndarray:
        st = self.state
        y = (x - st["mean"]) @ st["proj"]
        d = st["dims"]
        u = np.cos(st["freqs"] * math.pi * (y[:, d] - st["low"][d]) / st["span"][d])
        return _signs(u)

    def _codes_torch(self, x: torch.Tensor) -> torch.Tensor:
        st = {k: torch.as_tensor(v, device=x.device) for k, v in self.state.items()}
        y = (x - st["mean"]) @ st["proj"]
        d = st["dims"]
        u = torch.cos(st["freqs"] * math.pi * (y[:, d] - st["low"][d]) / st["span"][d])
        return torch.where(u >= 0, 1.0, -1.0).to(torch.float32)


# --------------------------------------------------------------------------- registration


@register_model("lsh", ShallowConfig)
def build_lsh(cfg: ShallowConfig) -> LSH:
    return LSH(cfg)


@register_model("pcah", ShallowConfig)
def build_pcah(cfg: ShallowConfig) -> PCAH:
    return PCAH(cfg)


@register_model("itq", ITQConfig)
def build_itq(cfg: ITQConfig) -> ITQ:
    return ITQ(cfg)


@register_model("sh", ShallowConfig)
def build_sh(cfg: ShallowConfig) -> SpectralHashing:
    return SpectralHashing(cfg)

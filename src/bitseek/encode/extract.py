"""Run a trained model over a dataset: codes (``encode``) or float descriptors (``embed``).

Outputs stay on the device until the end (one host transfer), so a GPU never waits on the host
between batches. The precision is an explicit choice: ``fp32`` (the default, as the official
ConMH/WSCH/CSCE code encodes) or ``bf16``/``fp16`` autocast. Half precision flips a fraction of
the bits of sign codes and perturbs float descriptors; ``docs/protocols.md`` gives the measured
effect. Closed-form baselines (not ``torch.nn.Module``) run as they are, on the host.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from bitseek.codes import CodeSet, FeatureSet
from bitseek.device import PRECISIONS, resolve_device, resolve_precision, to_device
from bitseek.errors import InputError
from bitseek.models.base import OutputKind, output_kind

INFERENCE_PRECISIONS = PRECISIONS

__all__ = ["INFERENCE_PRECISIONS", "inference_dtype", "encode_dataset", "embed_dataset", "extract", "save_extracted"]


def inference_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for inference on ``device`` (None = fp32); ``auto`` follows the engine's rule."""
    return resolve_precision(precision, device, key="eval.precision")


def _run(model: Any, dataset: Dataset, method: Literal["encode", "embed"], batch_size: int,
         device: str | torch.device, precision: str, num_workers: int, progress: bool, desc: str) -> np.ndarray:
    fn = getattr(model, method, None)
    if not callable(fn):
        raise InputError(f"{type(model).__name__} has no {method}() method")
    is_module = isinstance(model, torch.nn.Module)
    dev = resolve_device(device) if is_module else torch.device("cpu")
    amp = inference_dtype(precision, dev) if is_module else None
    if is_module:
        model.to(dev).eval()
    if getattr(dataset, "variable_size", False):  # items of different sizes cannot be stacked
        batch_size = 1
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=dev.type == "cuda")
    from bitseek.progress import progress as bar

    it: Any = bar(loader, desc=desc, unit="batch", show=progress)  # off a terminal or with --quiet: no bar
    out: list[torch.Tensor] = []
    autocast = (lambda: torch.autocast(dev.type, dtype=amp)) if amp is not None else contextlib.nullcontext
    with torch.inference_mode():
        for batch in it:
            batch = to_device(batch, dev) if is_module else batch
            with autocast():
                y = fn(batch)
            y = torch.as_tensor(y)
            if y.ndim != 2:
                raise InputError(f"{type(model).__name__}.{method}() returned shape {tuple(y.shape)}, expected (batch, dim)")
            out.append(y.float())
    if not out:
        raise InputError(f"{method}: the dataset is empty")
    return torch.cat([o.to(out[0].device) for o in out]).cpu().numpy().astype(np.float32, copy=False)


def encode_dataset(model: Any, dataset: Dataset, batch_size: int = 128, device: str | torch.device = "auto",
                   num_workers: int = 0, progress: bool = False, desc: str = "encode", *,
                   precision: str = "fp32") -> np.ndarray:
    """float32 (n, bits) codes in {-1, 0, +1} in dataset order."""
    return _run(model, dataset, "encode", batch_size, device, precision, num_workers, progress, desc)


def embed_dataset(model: Any, dataset: Dataset, batch_size: int = 128, device: str | torch.device = "auto",
                  num_workers: int = 0, progress: bool = False, desc: str = "embed", *,
                  precision: str = "fp32") -> np.ndarray:
    """float32 (n, dim) descriptors in dataset order; non-finite values are refused by name."""
    x = _run(model, dataset, "embed", batch_size, device, precision, num_workers, progress, desc)
    if not np.isfinite(x).all():
        raise InputError(f"{type(model).__name__}.embed() produced NaN or inf (precision={precision})")
    return x


def extract(model: Any, dataset: Dataset, batch_size: int = 128, device: str | torch.device = "auto", *,
            precision: str = "fp32", num_workers: int = 0, progress: bool = False,
            desc: str = "encode") -> tuple[OutputKind, np.ndarray]:
    """``(kind, rows)``: codes for a hashing model, descriptors for an embedder."""
    kind = output_kind(model)
    run = encode_dataset if kind == "codes" else embed_dataset
    return kind, run(model, dataset, batch_size, device, num_workers, progress, desc, precision=precision)


def save_extracted(kind: OutputKind, rows: np.ndarray, path: str | os.PathLike[str], ids: Any | None = None,
                   attrs: dict[str, Any] | None = None, meta: dict[str, list[Any]] | None = None,
                   feature_dtype: str = "float32") -> CodeSet | FeatureSet:
    """Write codes as a CodeSet (ternary zeros kept) or descriptors as a FeatureSet, atomically."""
    if kind == "codes":
        cs = CodeSet.from_signed(rows, ids=ids, attrs=dict(attrs or {}), meta=dict(meta or {}))
        cs.save(path)
        return cs
    fs = FeatureSet(rows, ids=ids, attrs=attrs, meta=meta, dtype=feature_dtype)
    fs.save(Path(path))
    return fs

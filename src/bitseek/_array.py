"""The one array coercion and id check every layer uses (codes, features, evaluator, index).

Inputs arrive as numpy arrays, torch tensors on any device, memory maps or plain sequences; each
public function turns them into numpy through :func:`as_numpy`, so a tensor on a GPU and a list
of lists are refused or accepted by the same rules everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bitseek.errors import InputError

__all__ = ["as_numpy", "as_ids"]


def as_numpy(x: Any, name: str | None = None) -> np.ndarray:
    """numpy view of ``x`` (torch tensors are detached and copied to the host; numpy is not copied).

    With ``name`` given, ``None`` and inputs numpy cannot read raise an InputError naming it.
    """
    if x is None and name is not None:
        raise InputError(f"{name}: missing (got None)")
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    if name is None:
        return np.asarray(x)
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as e:
        raise InputError(f"{name}: cannot be read as an array ({e})") from None


def as_ids(ids: Any, n: int | None = None, name: str = "ids", unique: bool = False,
           what: str = "items") -> np.ndarray:
    """Item ids as a 1-D int64 array of non-negative integers (a scalar is one id).

    Negative values are refused because search results use -1 for "no result"; ``unique=True``
    also refuses repeats (a set of items cannot hold one id twice).
    """
    a = np.atleast_1d(as_numpy(ids))
    if a.ndim != 1:
        raise InputError(f"{name}: must be 1-D, got shape {a.shape}")
    if a.size and a.dtype.kind not in "iu":
        raise InputError(f"{name}: must be integers, got dtype {a.dtype}")
    if a.dtype.kind == "u" and a.size and int(a.max()) > np.iinfo(np.int64).max:
        raise InputError(f"{name}: values above int64 max")
    a = a.astype(np.int64, copy=False)
    if a.size and int(a.min()) < 0:
        raise InputError(f"{name}: ids must be >= 0 (-1 means 'no result'), got {int(a.min())}")
    if n is not None and a.shape[0] != n:
        raise InputError(f"{name}: {a.shape[0]} ids for {n} {what}")
    if unique and a.size and np.unique(a).size != a.size:
        raise InputError(f"{name}: ids must be unique")
    return a

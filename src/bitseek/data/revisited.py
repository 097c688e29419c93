"""Revisited Oxford/Paris ground truth (revisitop ``gnd_<dataset>.pkl``), read without unpickling objects.

The file lists the database images (``imlist``), the queries (``qimlist``) and per query its
bounding box and the ``easy``/``hard``/``junk`` database indices. It is data, so it lives here; the
protocol built on it (Easy/Medium/Hard, mAP, mP@k) is :mod:`bitseek.eval.revisited`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bitseek.errors import FileFormatError
from bitseek.safe_pickle import ALLOW_NOTHING, PickleRefused, load_file

__all__ = ["load_gnd", "query_boxes"]


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

"""Per-item metadata (file path, label, title ...) kept beside an index, looked up by id.

Columns are stored against the sorted ids so that a lookup is one ``searchsorted``; an index
without metadata pays nothing. Saved as one JSON section of the index file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from bitseek.errors import InputError

__all__ = ["MetaStore"]


class MetaStore:
    """Metadata columns for a set of ids (not necessarily every id of the index)."""

    def __init__(self) -> None:
        self._ids = np.empty(0, dtype=np.int64)
        self._cols: dict[str, list[Any]] = {}

    def __bool__(self) -> bool:
        return bool(self._cols)

    @property
    def columns(self) -> list[str]:
        return list(self._cols)

    @staticmethod
    def check(meta: Mapping[str, Any] | None, n: int) -> dict[str, list[Any]]:
        """Validate metadata columns for ``n`` new items (one value per item each)."""
        if not meta:
            return {}
        if not isinstance(meta, Mapping):
            raise InputError(f"meta: expected a mapping of column name -> list, got {type(meta).__name__}")
        out: dict[str, list[Any]] = {}
        for key, values in meta.items():
            values = list(values)
            if len(values) != n:
                raise InputError(f"meta column {key!r}: {len(values)} values for {n} items")
            out[str(key)] = values
        return out

    def add(self, ids: np.ndarray, meta: dict[str, list[Any]]) -> None:
        """Attach checked columns to new ids (ids not present in the store)."""
        if not meta or ids.size == 0:
            return
        n_old = self._ids.size
        for key in meta:
            self._cols.setdefault(key, [None] * n_old)
        all_ids = np.concatenate([self._ids, ids])
        order = np.argsort(all_ids, kind="stable")
        for key, col in self._cols.items():
            merged = col + (meta[key] if key in meta else [None] * ids.size)
            self._cols[key] = [merged[i] for i in order]
        self._ids = all_ids[order]

    def drop(self, ids: np.ndarray) -> None:
        if not self._cols or ids.size == 0:
            return
        keep = ~np.isin(self._ids, ids)
        if keep.all():
            return
        rows = np.flatnonzero(keep)
        self._ids = self._ids[rows]
        self._cols = {k: [v[i] for i in rows] for k, v in self._cols.items()}

    def lookup(self, ids: Any) -> dict[str, list[Any]]:
        """Column values for ``ids`` in the given order, ``None`` where an id has no entry."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if not self._cols:
            return {}
        n = self._ids.size
        pos = np.minimum(np.searchsorted(self._ids, ids), max(n - 1, 0))
        found = (self._ids[pos] == ids) if n else np.zeros(ids.size, bool)
        return {k: [col[p] if f else None for p, f in zip(pos.tolist(), found.tolist())] for k, col in self._cols.items()}

    def to_bytes(self) -> bytes:
        return json.dumps({"ids": self._ids.tolist(), "columns": self._cols}).encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes) -> "MetaStore":
        """Inverse of ``to_bytes``; raises InputError if the section is inconsistent."""
        try:
            obj = json.loads(raw.decode("utf-8"))
            ids = np.asarray(obj["ids"], dtype=np.int64).reshape(-1)
            cols = {str(k): list(v) for k, v in dict(obj["columns"]).items()}
        except (ValueError, KeyError, TypeError, OverflowError) as e:
            raise InputError(f"metadata section is not valid ({type(e).__name__}: {e})") from None
        if ids.size > 1 and (np.diff(ids) <= 0).any():
            raise InputError("metadata ids are not sorted and unique")
        if any(len(v) != ids.size for v in cols.values()):
            raise InputError("metadata columns do not match the metadata ids")
        m = cls()
        m._ids, m._cols = ids, cols
        return m

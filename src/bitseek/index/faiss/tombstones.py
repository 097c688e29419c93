"""Removal for faiss binary indexes that cannot delete rows (MultiHash, HNSW).

A removed row stays inside faiss but its slot maps to id -1; ``search`` over-fetches past such
rows and ``range_search`` filters them. Once removed rows outnumber live ones the index is rebuilt
from its own stored codes (kept in insertion order), so searches never pay more than 2x.
"""

from __future__ import annotations

import faiss
import numpy as np

from bitseek.index.faiss.binary import BinaryIndex

__all__ = ["TombstoneIndex"]


class TombstoneIndex(BinaryIndex):
    """A binary engine whose faiss object keeps a flat ``storage`` of every row it was given."""

    tombstones = True

    def _stored_codes(self) -> np.ndarray:
        storage = faiss.downcast_IndexBinary(self._faiss.storage)
        return faiss.vector_to_array(storage.xb).reshape(-1, self.bits // 8)

    def _remove_rows(self, slots: np.ndarray, ids: np.ndarray) -> None:
        self._idmap.kill(slots)
        if self._idmap.n_dead > self._idmap.n_alive:
            self.compact()

    def compact(self) -> None:
        """Rebuild the faiss index from the live rows (order kept); a no-op without removed rows."""
        with self._lock.write():
            if self._idmap.n_dead == 0:
                return
            live = self._stored_codes()[self._idmap.slot_ids >= 0]
            old = self._faiss
            try:
                self._build()
                self._apply_options()
                if live.shape[0]:
                    self._faiss.add(np.ascontiguousarray(live))
            except BaseException:
                self._faiss = old
                raise
            self._idmap.compact()

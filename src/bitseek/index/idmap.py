"""Slot <-> id bookkeeping shared by every index backend.

faiss labels results by *slot* (the row position inside the faiss index), and slots move when rows are
removed. Users need stable ids. ``IdMap`` keeps, for every slot, the user id stored there (``-1`` for a
removed row that a tombstoning backend still holds), plus the alive ids in sorted order so that
membership, duplicate checks and id -> slot lookups are ``searchsorted`` calls instead of Python sets
(a 1M-entry set costs ~100 MB and seconds to build; two int64 arrays cost 16 MB).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bitseek.errors import InputError

__all__ = ["IdMap", "AddPlan", "DEAD"]

DEAD = -1  # id stored in the slot of a removed row; also the "no result" id faiss returns


class AddPlan(NamedTuple):
    """New ids, checked, with their sort order and insertion points in the sorted alive ids."""

    ids: np.ndarray
    order: np.ndarray
    sorted_ids: np.ndarray
    at: np.ndarray
    n_slots: int
    n_alive: int


def _merge(old: np.ndarray, new: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Insert ``new[j]`` before ``old[at[j]]`` (``at`` non-decreasing) in O(len(old) + len(new)), no sort."""
    out = np.empty(old.size + new.size, dtype=np.int64)
    dest = at + np.arange(new.size)
    is_old = np.ones(out.size, dtype=bool)
    is_old[dest] = False
    out[dest] = new
    out[is_old] = old
    return out


class IdMap:
    """Ids of the rows of one index, in slot (= insertion) order."""

    def __init__(self) -> None:
        # One extra trailing DEAD entry so that faiss's padding label -1 translates to -1 by plain
        # indexing (``ext[-1]`` is the sentinel): translation needs no mask and no branch.
        self._ext = np.full(1, DEAD, dtype=np.int64)
        self._sorted_ids = np.empty(0, dtype=np.int64)
        self._sorted_slots = np.empty(0, dtype=np.int64)
        self.next_auto_id = 0

    # ------------------------------------------------------------------ sizes
    @property
    def n_slots(self) -> int:
        """Rows the backend holds, removed-but-tombstoned ones included."""
        return int(self._ext.shape[0] - 1)

    @property
    def n_alive(self) -> int:
        return int(self._sorted_ids.shape[0])

    @property
    def n_dead(self) -> int:
        return self.n_slots - self.n_alive

    @property
    def slot_ids(self) -> np.ndarray:
        """Id per slot (read-only view), ``DEAD`` for tombstoned slots."""
        v = self._ext[:-1]
        v.flags.writeable = False
        return v

    def alive_ids(self) -> np.ndarray:
        """Alive ids in insertion order."""
        s = self._ext[:-1]
        return s[s != DEAD].copy()

    # ------------------------------------------------------------------ lookups
    def translate(self, labels: np.ndarray) -> np.ndarray:
        """Map slot labels (``-1`` = padding) to ids; tombstoned slots come out as ``-1``."""
        return self._ext[labels]

    def find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slots of ``ids`` and a mask of which ids are present (slots of absent ids are -1)."""
        n = self.n_alive
        if n == 0:
            return np.full(len(ids), -1, dtype=np.int64), np.zeros(len(ids), dtype=bool)
        # an id above every alive id lands at position n; clipping it to n-1 compares unequal
        pos = np.minimum(np.searchsorted(self._sorted_ids, ids), n - 1)
        found = self._sorted_ids[pos] == ids
        slots = np.where(found, self._sorted_slots[pos], -1).astype(np.int64)
        return slots, found

    def contains(self, ids: np.ndarray) -> np.ndarray:
        return self.find(ids)[1]

    def auto_ids(self, n: int) -> np.ndarray:
        """Fresh ids larger than any id ever added, so they can never collide or reuse a removed id."""
        return np.arange(self.next_auto_id, self.next_auto_id + n, dtype=np.int64)

    # ------------------------------------------------------------------ changes
    def check_new(self, ids: np.ndarray) -> "AddPlan":
        """Raise if ``ids`` repeats itself or collides with an alive id; else return the plan ``append`` uses.

        The one sort of the new ids happens here and is reused, so adding 1M ids costs one argsort.
        """
        order = np.argsort(ids)  # unstable is fine: equal ids are rejected just below (2x faster)
        new_sorted = ids[order]
        rep = new_sorted[1:][new_sorted[1:] == new_sorted[:-1]]
        if rep.size:
            raise InputError(f"add(): ids contain duplicates, e.g. {rep[:5].tolist()}")
        at = np.searchsorted(self._sorted_ids, new_sorted)
        if self.n_alive and ids.size:
            clash = new_sorted[self._sorted_ids[np.minimum(at, self.n_alive - 1)] == new_sorted]
            if clash.size:
                raise InputError(
                    f"add(): {clash.size} id(s) are already in the index, e.g. {clash[:5].tolist()} "
                    "(remove them first to replace their codes)"
                )
        return AddPlan(ids, order, new_sorted, at, self.n_slots, self.n_alive)

    def append(self, plan: "AddPlan") -> None:
        """Record the checked ids in new slots at the end (the map must not have changed since)."""
        if plan.ids.size == 0:
            return
        if (plan.n_slots, plan.n_alive) != (self.n_slots, self.n_alive):
            raise RuntimeError("IdMap changed between check_new and append")
        start = self.n_slots
        self._ext = np.concatenate([self._ext[:-1], plan.ids, [DEAD]]).astype(np.int64, copy=False)
        self._sorted_ids = _merge(self._sorted_ids, plan.sorted_ids, plan.at)
        self._sorted_slots = _merge(self._sorted_slots, start + plan.order, plan.at)
        self.next_auto_id = max(self.next_auto_id, int(plan.sorted_ids[-1]) + 1)

    def kill(self, slots: np.ndarray) -> None:
        """Tombstone ``slots``: their ids vanish from lookups, the slots stay (for backends that cannot delete)."""
        if slots.size == 0:
            return
        ids = self._ext[slots]
        at = np.searchsorted(self._sorted_ids, ids)
        self._sorted_ids = np.delete(self._sorted_ids, at)
        self._sorted_slots = np.delete(self._sorted_slots, at)
        self._ext[slots] = DEAD

    def compact(self) -> np.ndarray:
        """Drop tombstoned slots, renumbering the rest in order; returns the old slots kept."""
        body = self._ext[:-1]
        keep = body != DEAD
        new_of_old = np.cumsum(keep) - 1
        self._ext = np.concatenate([body[keep], [DEAD]]).astype(np.int64, copy=False)
        self._sorted_slots = new_of_old[self._sorted_slots]
        return np.flatnonzero(keep)

    def delete(self, slots: np.ndarray) -> None:
        """Remove ``slots`` for good (backends whose storage compacts in order, like faiss flat)."""
        self.kill(slots)
        self.compact()

    # ------------------------------------------------------------------ persistence
    @classmethod
    def from_slot_ids(cls, slot_ids: np.ndarray, next_auto_id: int) -> "IdMap":
        """Rebuild from a saved slot -> id array; raises InputError if it is inconsistent."""
        m = cls()
        s = np.asarray(slot_ids, dtype=np.int64)
        if s.ndim != 1:
            raise InputError("slot ids must be 1-D")
        if (s < DEAD).any():
            raise InputError("slot ids contain negative values other than -1")
        alive = np.flatnonzero(s != DEAD)
        order = np.argsort(s[alive], kind="stable")
        sorted_ids = s[alive][order]
        if sorted_ids.size > 1 and (sorted_ids[1:] == sorted_ids[:-1]).any():
            raise InputError("slot ids contain duplicates")
        if sorted_ids.size and int(sorted_ids[-1]) >= next_auto_id:
            raise InputError("next_auto_id is not above every id")
        m._ext = np.concatenate([s, [DEAD]]).astype(np.int64)
        m._sorted_ids = sorted_ids
        m._sorted_slots = alive[order].astype(np.int64)
        m.next_auto_id = int(next_auto_id)
        return m

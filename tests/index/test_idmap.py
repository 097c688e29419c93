"""Slot <-> id bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest

from bitseek.errors import InputError
from bitseek.index.idmap import DEAD, IdMap


def test_translate_find_kill_compact():
    m = IdMap()
    assert m.find(np.array([3]))[1].tolist() == [False]
    m.append(m.check_new(np.array([30, 10, 20])))
    m.append(m.check_new(np.array([5])))
    assert m.translate(np.array([[0, 3, -1]])).tolist() == [[30, 5, DEAD]]  # -1 padding stays -1
    slots, found = m.find(np.array([20, 99, 5, 0]))
    assert slots.tolist() == [2, -1, 3, -1] and found.tolist() == [True, False, True, False]
    m.kill(np.array([0, 2]))
    assert m.n_slots == 4 and m.n_alive == 2 and m.translate(np.array([0, 1])).tolist() == [DEAD, 10]
    assert m.compact().tolist() == [1, 3]
    assert m.slot_ids.tolist() == [10, 5] and m.find(np.array([5, 10]))[0].tolist() == [1, 0]
    assert m.next_auto_id == 31 and m.auto_ids(2).tolist() == [31, 32]
    with pytest.raises(InputError, match="already in the index"):
        m.check_new(np.array([7, 10]))
    with pytest.raises(InputError, match="duplicates"):
        m.check_new(np.array([7, 7]))
    plan = m.check_new(np.array([7]))
    m.append(m.check_new(np.array([8])))
    with pytest.raises(RuntimeError, match="changed between"):
        m.append(plan)  # a stale plan could have missed a clash


def test_from_slot_ids_round_trip_and_validation():
    m = IdMap.from_slot_ids(np.array([4, DEAD, 2, 9]), next_auto_id=10)
    assert m.n_slots == 4 and m.n_alive == 3 and m.alive_ids().tolist() == [4, 2, 9]
    assert m.find(np.array([9, 2]))[0].tolist() == [3, 2]
    for bad, nxt, msg in [
        (np.array([1, 1]), 5, "duplicates"),
        (np.array([1, -5]), 5, "negative"),
        (np.array([1, 7]), 5, "next_auto_id"),
        (np.zeros((2, 2)), 5, "1-D"),
    ]:
        with pytest.raises(InputError, match=msg):
            IdMap.from_slot_ids(bad, nxt)

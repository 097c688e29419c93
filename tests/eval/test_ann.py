"""eval.ann: id recall, tie-aware distance recall, range precision/recall — hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from bitseek.errors import InputError
from bitseek.eval.ann import distance_recall, knn_recall, range_precision_recall
from bitseek.index import RangeResult


def test_ties_count_as_correct_only_by_distance():
    # exact top-3: ids 1, 2, 3 at distances 0, 2, 2; an engine returned 1, 2 and 9, where 9 is
    # also at distance 2 (a tie at the k-th place): wrong by ids, right by distance
    true_d, true_i = np.array([[0, 2, 2]]), np.array([[1, 2, 3]])
    d, i = np.array([[0, 2, 2]]), np.array([[1, 2, 9]])
    assert knn_recall(i, true_i) == pytest.approx(2 / 3)
    assert distance_recall(d, i, true_d, true_i) == 1.0
    # a farther item (distance 5) and a padded place are wrong either way
    d2, i2 = np.array([[0, 5, 2**31 - 1]]), np.array([[1, 4, -1]])
    assert knn_recall(i2, true_i) == pytest.approx(1 / 3)
    assert distance_recall(d2, i2, true_d, true_i) == pytest.approx(1 / 3)


def test_inner_product_and_padded_truth():
    # larger is better; the truth has only 2 real items (the database is smaller than k)
    true_d, true_i = np.array([[0.9, 0.5, -np.inf]]), np.array([[7, 8, -1]])
    d, i = np.array([[0.9, 0.4, -np.inf]]), np.array([[7, 3, -1]])
    assert distance_recall(d, i, true_d, true_i, metric="ip") == 0.5
    assert knn_recall(i, true_i) == 0.5
    with pytest.raises(InputError, match="metric"):
        distance_recall(d, i, true_d, true_i, metric="l2")
    with pytest.raises(InputError, match="one shape"):
        distance_recall(d[:, :2], i, true_d, true_i)


def test_range_precision_recall():
    truth = RangeResult(np.array([0, 2, 3]), np.array([0, 1, 0]), np.array([5, 6, 7]))
    got = RangeResult(np.array([0, 1, 3]), np.array([0, 0, 3]), np.array([5, 7, 8]))
    p, r = range_precision_recall(got, truth)  # hits (0,5), (1,7); (1,8) is wrong; (0,6) missed
    assert p == pytest.approx(2 / 3) and r == pytest.approx(2 / 3)
    empty = RangeResult(np.array([0, 0]), np.empty(0), np.empty(0, np.int64))
    assert range_precision_recall(empty, empty) == (1.0, 1.0)

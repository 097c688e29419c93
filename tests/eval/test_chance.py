"""Chance-level mAP@K and label statistics: exact values against simulated random rankings."""

from __future__ import annotations

import numpy as np
import pytest

from bitseek.errors import InputError
from bitseek.eval import chance as ch


def test_chance_map_matches_random_rankings():
    rng = np.random.default_rng(0)
    q = (rng.random((6, 4)) < 0.4).astype(float)
    q[:, 0] = 1
    d = (rng.random((30, 4)) < 0.3).astype(float)
    rel = (q @ d.T) > 0
    ks = (1, 5, 12)
    sims = {k: [] for k in ks}
    for _ in range(4000):
        order = rng.permutation(30)
        r = rel[:, order]
        hits = np.cumsum(r, axis=1)
        for k in ks:
            sims[k].append(((r[:, :k] * hits[:, :k] / np.arange(1, k + 1)).sum(1) / k).mean())
    exact = ch.chance_map_at_k(q, d, ks)
    for k in ks:
        assert abs(np.mean(sims[k]) - exact[k]) < 4 * np.std(sims[k]) / np.sqrt(4000) + 1e-9
    stats = ch.label_statistics(q, d, ks=(5,))
    assert stats["relevant_per_query_mean"] == rel.sum(1).mean()
    assert stats["chance_map"]["5"] == pytest.approx(exact[5])




def test_chance_map_closed_form_cases():
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    d = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    # every item relevant: a random ranking is a perfect one
    assert ch.chance_map_at_k(np.ones((1, 1)), np.ones((5, 1)), [3])[3] == pytest.approx(1.0)
    # m = 2 of N = 4, K = 1: AP@1 = P(first is relevant) = 1/2
    assert ch.chance_map_at_k(q, d, [1])[1] == pytest.approx(0.5)
    stats = ch.label_statistics(q, d, ks=(1, 4))
    assert stats["ceiling_map"] == {"1": 1.0, "4": 0.5} and stats["relevant_fraction"] == 0.5
    with pytest.raises(InputError, match="K=5"):
        ch.chance_map_at_k(q, d, [5])


def test_old_import_path_still_works():
    from bitseek.data.embedded import moving_mnist as mm

    assert mm.chance_map_at_k is ch.chance_map_at_k and mm.label_statistics is ch.label_statistics

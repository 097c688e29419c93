"""SuperGlobal's MDescAug + RerankwMDA against a plain-loop float64 restatement of the official
computation, hand-checkable cases (a re-ordering that must happen, the weighted mean by formula, the
tail past M left alone), and the re-ranker interface (registry, rerank_ranks) giving the same ranks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bitseek.errors import ConfigError, InputError
from bitseek.registry import RERANKERS
from bitseek.rerank import RerankInputs, build_reranker, ranked_scores, rerank_ranks
from bitseek.rerank.superglobal import (DEFAULT_BETA, DEFAULT_K, DEFAULT_M, mdescaug, superglobal_ranks,
                                        superglobal_shortlist)

torch.set_num_threads(1)


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def loop_superglobal(q: np.ndarray, x: np.ndarray, column: np.ndarray, m: int, k: int, beta: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One query, written out: -> (new ranking column, refined descriptors, final scores in new order)."""
    top = [int(i) for i in column[:m]]
    mm, kk = len(top), min(k + 1, len(top))
    refined = []
    for i in range(mm):
        sims = [float(np.dot(x[top[i]], x[top[j]])) for j in range(mm)]
        nbrs = sorted(range(mm), key=lambda j: -sims[j])[:kk]  # Python's sort is stable
        num, den = np.zeros(x.shape[1]), 0.0
        for rank, j in enumerate(nbrs):
            w = 1.0 if rank == 0 else beta * sims[j]
            num += w * x[top[j]]
            den += w
        refined.append(num / den)
    step2 = [float(np.dot(q, r)) for r in refined]
    by_step2 = sorted(range(mm), key=lambda i: -step2[i])
    expanded = np.max([refined[i] for i in by_step2[:kk]], axis=0)
    final = {i: (step2[i] + float(np.dot(expanded, refined[i]))) / 2 for i in range(mm)}
    order = sorted(by_step2, key=lambda i: -final[i])
    new = np.concatenate([np.array([top[i] for i in order], dtype=np.int64), column[m:]])
    return new, np.array(refined), np.array([final[i] for i in order])


def _clustered(n_db: int, n_q: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors in a few clusters, so neighbourhoods matter and the re-ranking moves things."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((6, dim))
    x = _unit(centres[rng.integers(0, 6, n_db)] + 0.8 * rng.standard_normal((n_db, dim)))
    q = _unit(centres[rng.integers(0, 6, n_q)] + 0.8 * rng.standard_normal((n_q, dim)))
    return q, x


def _first_stage(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.argsort(-(x @ q.T), axis=0, kind="stable")


@pytest.mark.parametrize("n_db,m,k,beta", [(60, 20, 3, 0.15), (500, DEFAULT_M, DEFAULT_K, DEFAULT_BETA),
                                           (30, 50, 9, 0.4)])
def test_matches_the_loop_restatement(n_db: int, m: int, k: int, beta: float) -> None:
    q, x = _clustered(n_db, 4, 24, seed=n_db)
    ranks = _first_stage(q, x)
    got = superglobal_ranks(q.astype(np.float32), x.astype(np.float32), ranks, m=m, k=k, beta=beta, query_batch=3)
    moved = 0
    for i in range(q.shape[0]):
        want, refined, final = loop_superglobal(q[i], x, ranks[:, i], m, k, beta)
        np.testing.assert_array_equal(got[:, i], want)
        moved += int(np.sum(want != ranks[:, i]))
        top = torch.from_numpy(ranks[:m, i].copy())
        mda = mdescaug(torch.from_numpy(q[i:i + 1]), torch.from_numpy(x)[top][None], k, beta)
        np.testing.assert_allclose(mda.refined[0].numpy(), refined, rtol=1e-10, atol=1e-12)
        order, scores = superglobal_shortlist(torch.from_numpy(q[i:i + 1]), torch.from_numpy(x)[top][None], k, beta)
        np.testing.assert_allclose(scores[0].numpy(), final, rtol=1e-10)
        assert np.all(np.diff(scores[0].numpy()) <= 0)
    assert moved > 0  # the case is not vacuous: the re-ranking changes the order


def test_expanded_query_reorders_by_hand() -> None:
    """K = 0: refined = the descriptor itself, the expansion is the top hit x1, final = (q.x + x1.x) / 2.

    First stage: x1 (0.707) > x3 (0.65) > x2 (0.6) > x4 (0.5). x2 lies next to x1 (x1.x2 = 0.99) and x3
    far from it (0.46), so with M = 3: final x1 0.854, x2 0.795, x3 0.555 -> x1, x2, x3; x4 (beyond M)
    stays last although it would score (0.5 + 0.866 * 0.707) / 2 = 0.556 > x3."""
    q = np.array([1.0, 0.0, 0.0])
    x1 = _unit(np.array([1.0, 1.0, 0.0]))
    x2 = np.array([0.6, 0.8, 0.0])
    x3 = np.array([0.65, 0.0, math.sqrt(1 - 0.65 ** 2)])
    x4 = np.array([0.5, math.sqrt(0.75), 0.0])
    x = np.stack([x4, x3, x2, x1])  # db indices 0..3
    ranks = _first_stage(q[None], x)
    assert ranks[:, 0].tolist() == [3, 1, 2, 0]
    got = superglobal_ranks(q[None], x, ranks, m=3, k=0)
    assert got[:, 0].tolist() == [3, 2, 1, 0]
    _, scores = superglobal_shortlist(torch.tensor(q[None]), torch.tensor(x[[3, 1, 2]])[None], k=0)
    np.testing.assert_allclose(scores[0].numpy(), [(0.5 ** 0.5 + 1) / 2, (0.6 + 1.4 / 2 ** 0.5) / 2,
                                                   (0.65 + 0.65 / 2 ** 0.5) / 2], rtol=1e-12)
    assert superglobal_ranks(q[None], x, ranks, m=4, k=0)[:, 0].tolist() == [3, 2, 0, 1]  # inside M it moves


def test_weighted_mean_by_formula() -> None:
    """K = 1: r_i = (x_i + beta s x_j) / (1 + beta s), j = i's most similar other candidate, s = x_i . x_j."""
    x = _unit(np.array([[1.0, 0.1, 0.0], [1.0, 0.3, 0.2], [0.0, 1.0, 0.5]]))
    beta = 0.15
    mda = mdescaug(torch.tensor(x[:1]), torch.tensor(x)[None], k=1, beta=beta)
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    for i in range(3):
        j = int(np.argmax(s[i]))
        want = (x[i] + beta * s[i, j] * x[j]) / (1 + beta * s[i, j])
        np.testing.assert_allclose(mda.refined[0, i].numpy(), want, rtol=1e-12)
        np.testing.assert_allclose(mda.scores[0, i].item(), x[0] @ want, rtol=1e-12)


def test_beta_and_k_change_the_result() -> None:
    q, x = _clustered(300, 3, 16, seed=7)
    ranks = _first_stage(q, x)
    base = superglobal_ranks(q, x, ranks, m=100)
    assert not np.array_equal(base, superglobal_ranks(q, x, ranks, m=100, beta=0.9))
    assert not np.array_equal(base, superglobal_ranks(q, x, ranks, m=100, k=2))
    np.testing.assert_array_equal(base[100:], ranks[100:])


def test_reranker_interface_gives_the_same_ranks() -> None:
    assert "superglobal" in RERANKERS
    q, x = _clustered(120, 5, 16, seed=3)
    ranks = _first_stage(q, x)
    rr = build_reranker("superglobal", RerankInputs(query_global=q, db_global=torch.from_numpy(x)))
    assert rr.name == "superglobal"
    res = rerank_ranks(ranks, ranked_scores(x @ q.T, ranks), rr, mode="plain", k=40)
    want = superglobal_ranks(q, x, ranks, m=40)
    for proto in res.ranks:
        np.testing.assert_array_equal(res.ranks[proto], want)
    one = rr.rerank(2, ranks[:40, 2], (x @ q.T)[ranks[:40, 2], 2])
    assert sorted(one.ranking.tolist()) == sorted(ranks[:40, 2].tolist())
    assert one.scores.dtype == np.float64 and np.all(np.diff(one.scores) <= 0)


def test_bad_input_is_named() -> None:
    q, x = _clustered(20, 2, 8, seed=1)
    ranks = _first_stage(q, x)
    with pytest.raises(ConfigError, match="db_global"):
        build_reranker("superglobal", RerankInputs(query_global=q))
    with pytest.raises(ConfigError, match="k "):
        superglobal_ranks(q, x, ranks, k=-1)
    with pytest.raises(ConfigError, match="m "):
        superglobal_ranks(q, x, ranks, m=0)
    with pytest.raises(InputError, match="ranks"):
        superglobal_ranks(q, x, ranks + 5)
    with pytest.raises(InputError, match="dims"):
        superglobal_ranks(q[:, :4], x, ranks)
    rr = build_reranker("superglobal", RerankInputs(query_global=q, db_global=x))
    with pytest.raises(InputError, match="out of range"):
        rr.rerank(0, np.array([0, 99]), np.zeros(2))

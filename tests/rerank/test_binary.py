"""ITQ -> Hamming shortlist -> float re-scoring -> re-rank: exactness at full depth, a real cost when the
shortlist is short, bytes per image, and the CVNet re-ranker at the end of the chain."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bitseek.errors import ConfigError, InputError
from bitseek.eval.revisited import evaluate
from bitseek.rerank import ScoringReranker
from bitseek.rerank.binary import binary_first_stage, binary_stage_cost, exact_ranking, map_bytes


def _landmarks(seed=0, n_cls=12, per=30, nq_per=1, dim=64, noise=0.6):
    """Clustered unit descriptors; per query: easy = its cluster's nearest half, hard = the rest, junk = 2."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_cls, dim))
    lab = np.repeat(np.arange(n_cls), per)
    x = centers[lab] + noise * rng.standard_normal((lab.size, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = np.repeat(centers, nq_per, axis=0) + 0.3 * noise * rng.standard_normal((n_cls * nq_per, dim))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    gnd = []
    for i in range(q.shape[0]):
        mine = np.flatnonzero(lab == i // nq_per)
        mine = mine[np.argsort(-(x[mine] @ q[i]))]
        gnd.append({"easy": mine[2:per // 2], "hard": mine[per // 2:], "junk": mine[:2]})
    return q.astype(np.float32), x.astype(np.float32), gnd


class Oracle(ScoringReranker):
    name = "oracle"

    def __init__(self, gnd):
        self.pos = [set(np.concatenate([g["easy"], g["hard"]]).tolist()) for g in gnd]

    def score(self, query, candidates):
        return np.array([5.0 if c in self.pos[query] else 0.0 for c in candidates])


def test_full_depth_shortlist_recovers_the_exact_float_ranking():
    q, x, _ = _landmarks()
    st = binary_first_stage(q, x, bits=32, shortlist=10_000)
    r, s = exact_ranking(q, x)
    assert st.shortlist == x.shape[0] and st.bits == 32 and st.code_bytes == 4
    np.testing.assert_array_equal(st.ranks, r)
    np.testing.assert_allclose(st.scores, s, rtol=0, atol=1e-9)


def test_hamming_shortlist_is_ordered_by_float_scores_and_hamming_first():
    q, x, _ = _landmarks(1)
    st = binary_first_stage(q, x, bits=32, shortlist=20)
    for i in range(q.shape[0]):
        np.testing.assert_allclose(st.scores[:, i], x[st.ranks[:, i]].astype(np.float64) @ q[i].astype(np.float64))
        assert np.all(np.diff(st.scores[:, i]) <= 0)
        assert np.all(np.diff(st.hamming[:, i]) >= 0)  # the L kept are the L nearest in Hamming


def test_cost_report_short_shortlist_and_rerank():
    q, x, gnd = _landmarks(2, noise=1.5)
    rep = binary_stage_cost(q, x, gnd, bits=16, shortlist=40, reranker=Oracle(gnd), k=30, mode="gnd",
                            db_maps=[np.zeros((1024, 4, 6), np.float16)] * x.shape[0])
    assert rep["bytes_per_image"] == {"binary_code": 2, "float_descriptor": 64 * 4, "rerank_map": 1024 * 24 * 2.0}
    m = rep["map"]
    assert set(m) == {"float_full", "float_top_L", "binary_top_L", "float_top_L+rerank", "binary_top_L+rerank"}
    assert 0.0 < rep["recall_at_k"]["recall"] < 1.0  # 16 bits do lose neighbours
    assert rep["cost"]["first_stage"]["medium"] > 0.0
    assert rep["cost"]["first_stage"]["medium"] == round(m["float_top_L"]["medium"] - m["binary_top_L"]["medium"], 2)
    # against the whole float ranking the cut at depth L costs more than the Hamming search alone
    assert rep["cost"]["vs_float_full"]["medium"] == round(m["float_full"]["medium"] - m["binary_top_L"]["medium"], 2)
    assert rep["cost"]["vs_float_full"]["medium"] >= rep["cost"]["first_stage"]["medium"] - 1e-9
    assert m["binary_top_L+rerank"]["medium"] > m["binary_top_L"]["medium"]  # the re-ranker fixes order ...
    assert m["binary_top_L+rerank"]["medium"] < 100.0  # ... but not what the Hamming stage dropped
    assert rep["rerank"]["shortlist_mode"] == "gnd"
    assert m["float_full"]["medium"] == evaluate(exact_ranking(q, x)[0], gnd)["medium"].map


def test_bad_arguments():
    q, x, _ = _landmarks()
    with pytest.raises(InputError, match="64-d"):
        binary_first_stage(q[:, :10], x)
    with pytest.raises(ConfigError, match="shortlist"):
        binary_first_stage(q, x, shortlist=0)
    with pytest.raises(InputError, match="query_global"):
        binary_first_stage(np.zeros((0, 64), np.float32), x)


def test_chain_ends_in_cvnet_reranking():
    from bitseek.registry import MODELS
    from bitseek.rerank import CVNetReranker

    torch.manual_seed(0)
    model = MODELS.create(MODELS.config("cvnet", depth=50, reduction_dim=32)).eval()
    g = torch.Generator().manual_seed(3)
    db = torch.randn(40, 3, 48, 48, generator=g)
    qs = db[:3] + 0.1 * torch.randn(3, 3, 48, 48, generator=g)
    with torch.inference_mode():
        xg, qg = model.global_descriptor(db).numpy(), model.global_descriptor(qs).numpy()
        dmaps, qmaps = list(model.rerank_features(db).half()), list(model.rerank_features(qs).half())
    gnd = [{"easy": np.array([i]), "hard": np.array([], np.int64), "junk": np.array([], np.int64)} for i in range(3)]
    rr = CVNetReranker(model, qmaps, dmaps, batch_size=8)
    rep = binary_stage_cost(qg, xg, gnd, bits=16, shortlist=20, reranker=rr, k=10, mode="plain", db_maps=dmaps,
                            protocols=("easy", "medium"))
    assert rep["rerank"]["reranker"] == "cvnet" and rep["rerank"]["n_pairs"] == 30
    assert rep["bytes_per_image"]["rerank_map"] == 1024 * 3 * 3 * 2
    with torch.inference_mode():
        pyr = [model.rerank.project(m[None].float())[0] for m in dmaps[:2]]
    assert map_bytes(pyr) == sum(lv.numel() * 4 for lv in pyr[0].levels)  # a pyramid: its levels' bytes

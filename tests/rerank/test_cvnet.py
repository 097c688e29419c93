"""CVNet re-ranking from cached maps equals the uncached per-pair path, batched, with no host syncs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bitseek.errors import ConfigError, InputError
from bitseek.registry import MODELS, RERANKERS
from bitseek.rerank import (
    CVNetReranker,
    RerankInputs,
    build_reranker,
    fuse,
    ranked_scores,
    rerank_ranks,
)

torch.set_num_threads(1)

# (H, W) of the synthetic images: three map shapes among the database, so batches are grouped
DB_SIZES = [(64, 96), (96, 64), (64, 96), (80, 80), (64, 96), (96, 64), (64, 96)]
Q_SIZES = [(80, 64), (64, 64)]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = MODELS.create(MODELS.config("cvnet", depth=50)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial statistics and a learner whose scores spread out
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.bias.uniform_(-0.3, 0.3, generator=g)
        model.rerank.learner.classifier[2].weight.mul_(30.0)
    qimg = [torch.randn(1, 3, h, w, generator=g) for h, w in Q_SIZES]
    dimg = [torch.randn(1, 3, h, w, generator=g) for h, w in DB_SIZES]
    with torch.inference_mode():
        qmaps = [model.rerank_features(x)[0] for x in qimg]
        dmaps = [model.rerank_features(x)[0] for x in dimg]
        ref = np.array([[float(model.rerank_score(q, k)) for k in dimg] for q in qimg])  # uncached, per pair
    return model, qimg, dimg, qmaps, dmaps, ref


def test_cached_batched_scores_equal_the_uncached_per_pair_path(setup):
    model, _, _, qmaps, dmaps, ref = setup
    assert ref.std() > 1e-3  # the scores really differ between pairs
    cands = np.array([6, 0, 3, 1, 2, 5, 4])
    for bs in (1, 3, 8):
        rr = CVNetReranker(model, qmaps, dmaps, batch_size=bs)
        for q in range(len(qmaps)):
            np.testing.assert_allclose(rr.score(q, cands), ref[q, cands], atol=1e-5, rtol=0)
    tiny = CVNetReranker(model, qmaps, dmaps, batch_size=8, memory_budget=1)  # one pair per batch
    np.testing.assert_allclose(tiny.score(0, cands), ref[0, cands], atol=1e-5, rtol=0)


def test_fp16_cache_as_stored_and_numpy_maps(setup):
    model, _, _, qmaps, dmaps, ref = setup
    q16 = [m.half().numpy() for m in qmaps]
    d16 = [m.half().numpy() for m in dmaps]
    got = CVNetReranker(model, q16, d16, batch_size=4).score(1, np.arange(len(dmaps)))
    with torch.inference_mode():
        want = np.array([float(model.rerank_score_from_features(torch.from_numpy(q16[1])[None],
                                                                 torch.from_numpy(d)[None])) for d in d16])
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got, ref[1], atol=5e-3, rtol=0)  # fp16 storage rounding only


def test_no_host_sync_per_pair(setup, monkeypatch):
    model, _, _, qmaps, dmaps, ref = setup
    rr = CVNetReranker(model, qmaps, dmaps, batch_size=2)

    def boom(*a, **k):
        raise AssertionError("host sync inside the batched scoring loop")

    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, boom)
    out = rr.score_tensor(0, np.arange(len(dmaps)))
    monkeypatch.undo()
    assert out.device == next(model.parameters()).device
    np.testing.assert_allclose(out.double().numpy(), ref[0], atol=1e-5, rtol=0)


def test_registry_build_and_rerank_end_to_end(setup):
    model, _, _, qmaps, dmaps, ref = setup
    assert "cvnet" in RERANKERS.names()
    rr = build_reranker("cvnet", RerankInputs(model=model, query_maps=qmaps, db_maps=dmaps), batch_size=4)
    assert isinstance(rr, CVNetReranker) and rr.weight == 0.5
    rng = np.random.default_rng(0)
    sim = rng.uniform(-0.1, 0.1, (len(dmaps), len(qmaps)))
    ranks = np.argsort(-sim, axis=0)
    res = rerank_ranks(ranks, ranked_scores(sim, ranks), rr, mode="plain", k=5)
    for i in range(len(qmaps)):
        top = ranks[:5, i]
        want = fuse(top, sim[top, i], ref[i, top]).ranking
        np.testing.assert_array_equal(res.ranks["medium"][:5, i], want)
        np.testing.assert_array_equal(res.ranks["medium"][5:, i], ranks[5:, i])
    assert res.reranker == "cvnet"


def test_bad_inputs_are_named(setup):
    model, _, _, qmaps, dmaps, _ = setup
    with pytest.raises(ConfigError, match="RerankInputs.db_maps"):
        build_reranker("cvnet", RerankInputs(model=model, query_maps=qmaps))
    with pytest.raises(ConfigError, match="needs a CVNet model"):
        CVNetReranker(object(), qmaps, dmaps)
    rr = CVNetReranker(model, qmaps, dmaps)
    with pytest.raises(InputError, match=r"db_maps: index 99 out of range"):
        rr.score(0, np.array([99]))
    bad = CVNetReranker(model, qmaps, [torch.zeros(512, 4, 4)])
    with pytest.raises(InputError, match=r"db_maps\[0\]: 512 channels"):
        bad.score(0, np.array([0]))


def test_cached_pyramids_equal_the_uncached_per_pair_path(setup):
    """The database cache of ``bitseek retrieval test``: each image's convolved pyramid (3 levels of
    256 channels), stored fp32 or fp16, instead of its 1024-channel stage-3 map."""
    from bitseek.models.cvnet.rerank import Pyramid

    model, _, _, qmaps, dmaps, ref = setup
    with torch.inference_mode():
        dpyr = [model.rerank.project(m[None])[0] for m in dmaps]
        qpyr = [model.rerank.project(m[None])[0] for m in qmaps]
    assert all(isinstance(p, Pyramid) and len(p.levels) == 3 and p.levels[0].shape[0] == 256 for p in dpyr)
    assert dpyr[1].size == tuple(dmaps[1].shape[-2:])
    cands = np.array([6, 0, 3, 1, 2, 5, 4])
    for qsrc in (qmaps, qpyr):  # the query side as a map or as a pyramid
        rr = CVNetReranker(model, qsrc, dpyr, batch_size=3)
        for q in range(len(qmaps)):
            np.testing.assert_allclose(rr.score(q, cands), ref[q, cands], atol=1e-5, rtol=0)
    d16 = [Pyramid(p.size, tuple(lv.half().numpy() for lv in p.levels)) for p in dpyr]
    got = CVNetReranker(model, qmaps, d16, batch_size=4).score(0, cands)
    np.testing.assert_allclose(got, ref[0, cands], atol=5e-3, rtol=0)  # fp16 storage rounding only
    mixed = CVNetReranker(model, qmaps, [dpyr[0], dmaps[2]], batch_size=4)  # same map size, two kinds
    with pytest.raises(InputError, match="mixes pyramids and stage-3 maps"):
        mixed.score(0, np.array([0, 1]))

"""The lifted form of CVNet's cross-scale correlation (normalise + resize each side, one matmul) equals
the official form (9 cosine correlations, each 4D-resized) -- the identity the batched re-ranker uses."""

from __future__ import annotations

import pytest
import torch

from bitseek.models.cvnet import CVReranker
from bitseek.models.cvnet.rerank import (
    cross_scale_correlation,
    lift_pyramid,
    lifted_correlation,
)

torch.set_num_threads(1)


@pytest.mark.parametrize("qs,ks", [((5, 7), (6, 4)), ((3, 3), (9, 5)), ((2, 2), (4, 4))])
def test_lifted_equals_resized_cosine_correlation(qs, ks):
    torch.manual_seed(0)
    rr = CVReranker(64, 16).eval()
    fq, fk = torch.randn(1, 64, *qs), torch.randn(3, 64, *ks)
    with torch.no_grad():
        ref = cross_scale_correlation(fq.expand(3, -1, -1, -1), fk, rr.scales, rr.scale_convs)
        got = lifted_correlation(rr.lift(fq), rr.lift(fk), (*qs, *ks))
        assert got.shape == ref.shape == (3, 9, *qs, *ks)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(rr.score_lifted(rr.lift(fq), rr.lift(fk), (*qs, *ks)),
                                   rr(fq.expand(3, -1, -1, -1), fk), atol=1e-5, rtol=0)


def test_lift_shape_and_unit_norms():
    levels = [torch.randn(2, 8, 2, 3), torch.randn(2, 8, 4, 6)]
    t = lift_pyramid(levels, (4, 6))
    assert t.shape == (2, 2, 8, 24)
    torch.testing.assert_close(t[:, 1].norm(dim=1), torch.ones(2, 24))  # the scale-1 level: normalised only


@pytest.mark.parametrize("qs,ks,stride", [((5, 7), (6, 4), (2, 2)), ((3, 3), (9, 5), (2, 2)), ((4, 6), (5, 5), (1, 2)),
                                          ((4, 6), (5, 5), (3, 1))])
def test_correlation_slabs_are_the_strided_parts_of_the_lifted_correlation(qs, ks, stride):
    from bitseek.models.cvnet.rerank import correlation_slabs

    torch.manual_seed(1)
    rr = CVReranker(32, 8).eval()
    qt, kt = rr.lift(torch.randn(1, 32, *qs)), rr.lift(torch.randn(2, 32, *ks))
    sq, sk = stride
    with torch.no_grad():
        full = lifted_correlation(qt, kt, (*qs, *ks))  # (B, 9, Hq, Wq, Hk, Wk), query scale outer
        a, b = correlation_slabs(qt, kt, (*qs, *ks), stride)
    s = 3
    want_a = full[..., ::sk, ::sk]  # every query position, strided key positions
    hk, wk = want_a.shape[-2:]
    want_a = want_a.unflatten(1, (s, s)).transpose(1, 2).flatten(1, 2)  # key scale outer
    torch.testing.assert_close(a, want_a.permute(0, 4, 5, 1, 2, 3).reshape(-1, s * s, *qs), atol=1e-6, rtol=0)
    want_b = full[:, :, ::sq, ::sq]
    torch.testing.assert_close(b, want_b.permute(0, 2, 3, 1, 4, 5).reshape(-1, s * s, *ks), atol=1e-6, rtol=0)
    assert (a >= 0).all() and (b >= 0).all()


def test_learner_from_slabs_equals_the_learner_on_the_full_correlation():
    torch.manual_seed(2)
    rr = CVReranker(32, 8).eval()
    with torch.no_grad():
        for m in rr.learner.modules():  # non-trivial norms so a wrong channel order shows
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.5, 0.5)
        qt, kt = rr.lift(torch.randn(1, 32, 7, 9)), rr.lift(torch.randn(3, 32, 8, 6))
        size = (7, 9, 8, 6)
        ref = rr.learner(lifted_correlation(qt, kt, size))
        got = rr.learner.forward_slabs(*_slabs(qt, kt, size, rr), 3)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
        assert ref.std() > 1e-3


def _slabs(qt, kt, size, rr):
    from bitseek.models.cvnet.rerank import correlation_slabs

    return correlation_slabs(qt, kt, size, rr.learner.blocks[0][0].conv.stride)


def test_channels_last_learner_equals_the_official_layout():
    torch.manual_seed(4)
    rr = CVReranker(32, 8).eval()
    with torch.no_grad():
        corr = lifted_correlation(rr.lift(torch.randn(1, 32, 6, 5)), rr.lift(torch.randn(2, 32, 7, 7)), (6, 5, 7, 7))
        torch.testing.assert_close(rr.learner.forward_cl(corr), rr.learner(corr), atol=1e-5, rtol=1e-5)

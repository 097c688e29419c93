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

"""WSCH's cluster-guided loss: cross-entropy of cosine/temperature logits against the nearest centre."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bitseek.errors import InputError
from bitseek.losses.cluster import cluster_assignment_loss, cluster_logits

torch.set_num_threads(1)


def test_cluster_loss_definition():
    gen = torch.Generator().manual_seed(1)
    z = F.normalize(torch.randn(5, 8, generator=gen), dim=1)
    centres = torch.randn(4, 8, generator=gen).sign()
    centres[2] = 0.0  # a degenerate (all-zero) centre has similarity 0
    sim = F.cosine_similarity(z[:, None], centres[None], dim=2) / 0.2
    want = F.cross_entropy(sim, sim.argmax(1))
    torch.testing.assert_close(cluster_assignment_loss(z, centres, 0.2), want)
    # minimising it pulls a code towards its nearest centre
    zz = z.clone().requires_grad_(True)
    cluster_assignment_loss(zz, centres, 0.2).backward()
    nearest = centres[sim.argmax(1)]
    real = nearest.any(1)  # codes whose nearest centre is not the zero one
    assert real.sum() >= 3 and ((-zz.grad * nearest).sum(1)[real] > 0).all()


def test_cluster_loss_equals_a_scalar_loop() -> None:
    """The same loss written out one code at a time from its definition."""
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    centres = torch.randn(3, 5, generator=gen, dtype=torch.float64).sign()
    t = 0.3
    total = 0.0
    for row in z.tolist():
        norm = math.sqrt(sum(a * a for a in row))
        logits = [sum(a * c for a, c in zip(row, cen)) / norm / math.sqrt(sum(c * c for c in cen)) / t
                  for cen in centres.tolist()]
        best = max(logits)
        total += best + math.log(sum(math.exp(x - best) for x in logits)) - best  # target = arg-max
    assert cluster_assignment_loss(z, centres, t).item() == pytest.approx(total / 6, rel=1e-6)
    assert cluster_logits(z, centres, t).shape == (6, 3)


def test_cluster_loss_argument_errors() -> None:
    z = torch.randn(2, 4)
    with pytest.raises(InputError, match="must agree"):
        cluster_assignment_loss(z, torch.ones(3, 5))
    with pytest.raises(InputError, match="no cluster centres"):
        cluster_assignment_loss(z, torch.ones(0, 4))
    with pytest.raises(InputError, match="temperature"):
        cluster_assignment_loss(z, torch.ones(3, 4), 0.0)

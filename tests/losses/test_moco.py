"""The labelled momentum queue (FIFO, empty slots), the supervised InfoNCE against a loop, the EMA."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bitseek.errors import ConfigError
from bitseek.losses.moco import LabelledQueue, ema_update, gather_keys, momentum_contrastive_loss


def test_queue_is_fifo_and_wraps():
    q = LabelledQueue(5, 2)
    q.enqueue(torch.ones(3, 2), torch.tensor([1, 2, 3]))
    assert q.labels.tolist() == [1, 2, 3, -1, -1] and int(q.ptr) == 3
    q.enqueue(torch.full((3, 2), 2.0), torch.tensor([4, 5, 6]))
    assert q.labels.tolist() == [6, 2, 3, 4, 5] and int(q.ptr) == 1
    assert q.feats[0].tolist() == [2.0, 2.0] and q.feats[1].tolist() == [1.0, 1.0]
    q.enqueue(torch.arange(14.0).view(7, 2), torch.arange(7))  # more keys than slots: the newest 5
    assert sorted(q.labels.tolist()) == [2, 3, 4, 5, 6]


def reference(q, labels, keys, key_labels, qfeats, qlabels, tau):
    cand = torch.cat([keys, qfeats])
    cl = torch.cat([key_labels, qlabels])
    total = 0.0
    for i in range(len(q)):
        qi = F.normalize(q[i], dim=0)
        sims = [float(qi @ cand[j]) / tau for j in range(len(cand)) if cl[j] >= 0]
        labs = [int(cl[j]) for j in range(len(cand)) if cl[j] >= 0]
        lse = math.log(sum(math.exp(s) for s in sims))
        pos = [s - lse for s, lab in zip(sims, labs) if lab == int(labels[i])]
        total += -sum(pos) / len(pos)
    return total / len(q)


def test_loss_matches_a_loop_and_ignores_empty_slots():
    torch.manual_seed(0)
    q = torch.randn(4, 6, requires_grad=True)
    labels = torch.tensor([0, 1, 1, 2])
    keys = F.normalize(torch.randn(4, 6), dim=1)
    queue = LabelledQueue(6, 6)
    queue.enqueue(F.normalize(torch.randn(4, 6), dim=1), torch.tensor([1, 3, 0, 1]))  # 2 slots stay empty
    got = momentum_contrastive_loss(q, labels, keys, labels, queue, temperature=0.2)
    want = reference(q.detach(), labels, keys, labels, queue.feats, queue.labels, 0.2)
    assert float(got.detach()) == pytest.approx(want, rel=1e-5)
    got.backward()
    assert torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
    # a queue entry of the same label changes the loss; a slot marked empty does not
    queue.labels[4] = 2
    assert float(momentum_contrastive_loss(q, labels, keys, labels, queue, 0.2).detach()) != pytest.approx(float(got.detach()))


def test_perfect_keys_give_a_lower_loss_than_random_ones():
    torch.manual_seed(1)
    base = F.normalize(torch.randn(3, 16), dim=1)
    labels = torch.tensor([0, 1, 2])
    good = momentum_contrastive_loss(base * 5, labels, base, labels, None, 0.1)
    bad = momentum_contrastive_loss(base * 5, labels, F.normalize(torch.randn(3, 16), dim=1), labels, None, 0.1)
    assert float(good) < float(bad)
    with pytest.raises(ConfigError, match="temperature"):
        momentum_contrastive_loss(base, labels, base, labels, None, 0.0)


def test_ema_update_by_name_on_a_subset():
    src = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Linear(2, 1))
    dst = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        src[1].running_mean.fill_(3.0)
    before = dst[0].weight.detach().clone()
    ema_update(dst, src, 0.9)
    assert torch.allclose(dst[0].weight, 0.9 * before + 0.1 * src[0].weight.detach())
    assert dst[1].running_mean.tolist() == [3.0, 3.0]
    ema_update(dst, src, 0.0)
    assert torch.equal(dst[0].weight, src[0].weight)


def test_gather_keys_is_the_identity_in_one_process():
    k, y = torch.randn(3, 4), torch.tensor([1, 2, 3])
    gk, gy = gather_keys(k, y)
    assert torch.equal(gk, k) and torch.equal(gy, y)

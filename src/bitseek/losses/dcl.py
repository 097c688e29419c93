"""Debiased contrastive loss (Chuang et al., NeurIPS 2020), in the form ConMH applies to codes.

For a batch of B pairs (z1[i], z2[i]) all 2B vectors are L2-normalised; each of the 2B anchors has
one positive (its partner view) and N = 2B - 2 negatives (everything but itself and its partner):

    pos   = exp(cos(anchor, partner) / t)
    Ng    = (sum_neg exp(cos / t) - tau_plus * N * pos) / (1 - tau_plus)
    Ng    = max(Ng, N * exp(-1 / t))          # the estimator's theoretical minimum
    loss  = mean over anchors of -log(pos / (pos + Ng))

``tau_plus`` is the assumed class prior: the probability that a "negative" is in fact a positive.
With B = 1 there are no negatives, Ng = 0 and the loss is 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from bitseek.errors import InputError


def negative_mask(batch: int, device: torch.device | str | None = None) -> Tensor:
    """(2B, 2B) bool: True where column j is a negative for anchor i (not i itself, not its partner)."""
    n = 2 * batch
    idx = torch.arange(n, device=device)
    partner = (idx + batch) % n
    mask = torch.ones(n, n, dtype=torch.bool, device=device)
    mask[idx, idx] = False
    mask[idx, partner] = False
    return mask


def dcl_loss(z1: Tensor, z2: Tensor, temperature: float = 0.5, tau_plus: float = 0.1) -> Tensor:
    """Debiased contrastive loss between two views (B, d) -> scalar (float32).

    Computed in float32 with autocast off: the exponentials of cosine/t and the clamp constant are
    sensitive to half precision. The negatives are summed with a static mask (no data-dependent
    shapes), so the loss needs no device->host sync.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise InputError(f"dcl_loss: views must both be (B, d); got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if temperature <= 0:
        raise InputError(f"dcl_loss: temperature must be > 0, got {temperature}")
    if not 0.0 <= tau_plus < 1.0:
        raise InputError(f"dcl_loss: tau_plus must be in [0, 1), got {tau_plus}")
    batch = z1.shape[0]
    with torch.autocast(device_type=z1.device.type, enabled=False):
        a = F.normalize(z1.float(), dim=1)
        b = F.normalize(z2.float(), dim=1)
        out = torch.cat([a, b], dim=0)
        sim = torch.exp(out @ out.t() / temperature)
        neg = torch.where(negative_mask(batch, z1.device), sim, torch.zeros_like(sim)).sum(dim=-1)
        pos = torch.exp((a * b).sum(dim=-1) / temperature)
        pos = torch.cat([pos, pos], dim=0)
        n_neg = 2 * batch - 2
        ng = (neg - tau_plus * n_neg * pos) / (1.0 - tau_plus)
        ng = torch.clamp(ng, min=n_neg * math.exp(-1.0 / temperature))
        return (-torch.log(pos / (pos + ng))).mean()

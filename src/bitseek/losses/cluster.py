"""Cluster-guided loss of WSCH: pull each video code towards its nearest cluster centre.

The logits are cosine similarities of a code to every centre divided by a temperature; the
target is the centre with the largest similarity (a self-assignment, so the gradient sharpens the
assignment rather than moving codes between clusters). Centres may contain exact zeros (sign of
a k-means mean); an all-zero centre has similarity 0, as with ``F.cosine_similarity``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from bitseek.errors import InputError

__all__ = ["cluster_logits", "cluster_assignment_loss"]


def cluster_logits(codes: Tensor, centres: Tensor, temperature: float) -> Tensor:
    """(B, K) cosine similarities / temperature, via one normalised matmul (no (B, K, bits) tensor)."""
    if codes.dim() != 2 or centres.dim() != 2 or codes.shape[1] != centres.shape[1]:
        raise InputError(f"cluster loss: codes (B, bits) and centres (K, bits) must agree, "
                         f"got {tuple(codes.shape)} and {tuple(centres.shape)}")
    if centres.shape[0] == 0:
        raise InputError("cluster loss: there are no cluster centres")
    if temperature <= 0:
        raise InputError(f"cluster loss: temperature must be > 0, got {temperature}")
    c = F.normalize(codes, dim=1, eps=1e-8)
    m = F.normalize(centres.to(codes.dtype), dim=1, eps=1e-8)
    return (c @ m.t()) / temperature


def cluster_assignment_loss(codes: Tensor, centres: Tensor, temperature: float = 0.2) -> Tensor:
    """Cross-entropy of the similarity logits against the arg-max (nearest) centre."""
    logits = cluster_logits(codes, centres, temperature)
    target = logits.detach().argmax(dim=1)
    return F.cross_entropy(logits.float(), target)

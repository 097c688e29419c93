"""Momentum-contrastive loss with labels (CVNet's second global-training loss; He et al.'s MoCo queue).

A *momentum encoder* (an exponential moving average of the online network, never optimised) encodes
every batch into keys; the keys go into a FIFO queue together with their landmark ids. For each
online descriptor ``q_i`` (label ``y_i``) the candidates are the current batch's keys and the queue;
the positives are the candidates with label ``y_i`` (its own key among them), everything else is a
negative, and the loss is the InfoNCE form averaged over the positives (supervised contrastive)::

    loss_i = - mean_{p in P(i)} log( exp(q_i . k_p / tau) / sum_{c in C} exp(q_i . k_c / tau) )

Empty queue slots (label -1) are no candidates. Under DDP the keys of every rank are all-gathered
(in rank order, the global batch order) before they are scored and enqueued, so every rank holds the
same queue and each ``q_i`` meets the same candidates it would meet in one process on the global
batch; keys carry no gradient, so a plain gather suffices (:func:`bitseek.collective.all_gather_varlen`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bitseek import collective
from bitseek.errors import ConfigError, InputError

__all__ = ["LabelledQueue", "ema_update", "momentum_contrastive_loss"]


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, momentum: float) -> None:
    """``target <- momentum * target + (1 - momentum) * source`` for parameters; buffers (BN statistics) copied.

    Matched by name: ``target`` may hold a subset of ``source`` (the momentum encoder has no re-rank head)."""
    params = dict(source.named_parameters())
    buffers = dict(source.named_buffers())
    for name, pt in target.named_parameters():
        pt.mul_(momentum).add_(params[name].detach(), alpha=1.0 - momentum)
    for name, bt in target.named_buffers():
        bt.copy_(buffers[name])


class LabelledQueue(nn.Module):
    """A FIFO queue of ``size`` L2-normalised keys and their labels (buffers: saved in checkpoints)."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ConfigError(f"momentum queue: size and dim must be >= 1, got {size} and {dim}")
        self.register_buffer("feats", torch.zeros(size, dim))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros(1, dtype=torch.long))

    @property
    def size(self) -> int:
        return int(self.feats.shape[0])

    @torch.no_grad()
    def enqueue(self, keys: Tensor, labels: Tensor) -> None:
        """Append (already gathered) keys, overwriting the oldest; more keys than slots keep the newest."""
        n = keys.shape[0]
        if n == 0:
            return
        if n > self.size:
            keys, labels, n = keys[-self.size:], labels[-self.size:], self.size
        pos = (self.ptr + torch.arange(n, device=self.ptr.device)) % self.size  # no host sync
        self.feats.index_copy_(0, pos, keys.detach().to(self.feats.dtype))
        self.labels.index_copy_(0, pos, labels.detach().long())
        self.ptr.copy_((self.ptr + n) % self.size)


def momentum_contrastive_loss(q: Tensor, labels: Tensor, keys: Tensor, key_labels: Tensor,
                              queue: LabelledQueue | None, temperature: float = 0.1) -> Tensor:
    """The loss above for local queries ``q`` (B, D) against the global batch's ``keys`` and ``queue``.

    ``keys``/``key_labels`` are the gathered batch keys (every rank's, see :func:`gather_keys`);
    rows without a positive (impossible while a row's own key is among the keys) count 0."""
    if q.dim() != 2 or keys.dim() != 2 or q.shape[1] != keys.shape[1]:
        raise InputError(f"momentum contrast: queries (B, D) and keys (N, D), got {tuple(q.shape)} and {tuple(keys.shape)}")
    if temperature <= 0:
        raise ConfigError(f"momentum contrast: temperature must be > 0, got {temperature}")
    with torch.autocast(device_type=q.device.type, enabled=False):
        dtype = torch.promote_types(q.dtype, torch.float32)  # float32 at least (fp16/bf16 under AMP)
        qn = F.normalize(q.to(dtype), dim=1)
        cand = keys.detach().to(dtype)
        cand_labels = key_labels.long()
        if queue is not None:
            cand = torch.cat([cand, queue.feats.detach().to(dtype)])
            cand_labels = torch.cat([cand_labels, queue.labels])
        logits = qn @ cand.t() / temperature
        valid = (cand_labels >= 0).unsqueeze(0)
        logits = logits.masked_fill(~valid, float("-inf"))
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        pos = (cand_labels.unsqueeze(0) == labels.long().view(-1, 1)) & valid
        n_pos = pos.sum(dim=1)
        per_row = -torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(dim=1) / n_pos.clamp(min=1)
        return per_row.mean()


@torch.no_grad()
def gather_keys(keys: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Every rank's keys and labels in rank order (identity in one process)."""
    lay = collective.batch_layout()
    sizes = lay.sizes if lay is not None and lay.local == keys.shape[0] else None
    return collective.all_gather_varlen(keys.contiguous(), sizes), \
        collective.all_gather_varlen(labels.contiguous(), sizes)


__all__ += ["gather_keys"]

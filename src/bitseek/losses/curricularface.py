"""CurricularFace (Huang et al., CVPR 2020): an additive-angular-margin softmax whose hard negatives
are re-weighted by an adaptive curriculum parameter ``t``. CVNet trains its global descriptor with it.

For L2-normalised embeddings ``x`` and class weights ``W`` (columns normalised), ``cos = x W`` and
for each row with label ``y``:

* target logit: ``cos(theta_y + m)`` while ``theta_y + m <= pi`` (``cos_y > cos(pi - m)``), else the
  linear fallback ``cos_y - m sin(pi - m)`` (the official ``mm`` term);
* a non-target class j is *hard* when ``cos_j > cos(theta_y + m)``; its logit becomes
  ``cos_j (t + cos_j)``, easy ones stay ``cos_j``;
* ``t`` is an exponential moving average of the batch's mean target cosine,
  ``t <- 0.01 mean(cos_y) + 0.99 t`` (starts at 0), updated before the hard logits are formed, as the
  official ``CurricularFace`` head does; under DDP the mean is over the global batch, so every rank
  keeps the same ``t`` a single process would;
* the loss is the cross-entropy of ``s *`` these logits.

Defaults m = 0.5, s = 64 are the paper's (and CVNet's). The class weights start N(0, 0.01) as in
the official head. ``sqrt(1 - cos^2)`` is taken of a value clamped at 1e-7, so a row whose target
cosine reaches +-1 has a finite gradient (the official code would give inf there).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bitseek import collective
from bitseek.errors import ConfigError, InputError

__all__ = ["CurricularFace", "curricular_logits"]


def curricular_logits(cos: Tensor, labels: Tensor, t: Tensor, m: float) -> Tensor:
    """The CurricularFace logits before the scale ``s`` (``t`` is the already-updated curriculum value)."""
    target = cos.gather(1, labels.view(-1, 1))
    sin = torch.sqrt((1.0 - target * target).clamp(min=1e-7))
    target_m = target * math.cos(m) - sin * math.sin(m)  # cos(theta_y + m)
    final_target = torch.where(target > math.cos(math.pi - m), target_m, target - math.sin(math.pi - m) * m)
    hard = cos > target_m
    out = torch.where(hard, cos * (t + cos), cos)
    return out.scatter(1, labels.view(-1, 1), final_target)


class CurricularFace(nn.Module):
    """The classification head + loss: ``forward(embeddings, labels) -> (loss, logits)``.

    ``t`` is a buffer, so checkpoints carry it and a resumed run continues the same curriculum."""

    def __init__(self, dim: int, num_classes: int, m: float = 0.5, s: float = 64.0, t_alpha: float = 0.01) -> None:
        super().__init__()
        if dim < 1 or num_classes < 2:
            raise ConfigError(f"CurricularFace: need dim >= 1 and num_classes >= 2, got {dim} and {num_classes}")
        if not 0.0 <= m < math.pi / 2 or s <= 0 or not 0.0 < t_alpha <= 1.0:
            raise ConfigError(f"CurricularFace: need 0 <= m < pi/2, s > 0 and 0 < t_alpha <= 1; got m={m}, s={s}, "
                              f"t_alpha={t_alpha}")
        self.m, self.s, self.t_alpha = float(m), float(s), float(t_alpha)
        self.kernel = nn.Parameter(torch.empty(dim, num_classes))
        nn.init.normal_(self.kernel, std=0.01)
        self.register_buffer("t", torch.zeros(1))

    @property
    def num_classes(self) -> int:
        return int(self.kernel.shape[1])

    def cosines(self, x: Tensor) -> Tensor:
        dtype = torch.promote_types(torch.promote_types(x.dtype, self.kernel.dtype), torch.float32)  # >= float32
        return (F.normalize(x.to(dtype), dim=1) @ F.normalize(self.kernel.to(dtype), dim=0)).clamp(-1.0, 1.0)

    def forward(self, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() != 2 or labels.shape != (x.shape[0],):
            raise InputError(f"CurricularFace: embeddings (B, D) and labels (B,), got {tuple(x.shape)} and "
                             f"{tuple(labels.shape)}")
        labels = labels.long()
        with torch.autocast(device_type=x.device.type, enabled=False):
            cos = self.cosines(x)
            if self.training:
                with torch.no_grad():
                    target = cos.gather(1, labels.view(-1, 1)).detach()
                    both = collective.all_gather_varlen(target)  # the global batch's mean under DDP
                    self.t.mul_(1.0 - self.t_alpha).add_(self.t_alpha * both.mean())
            logits = curricular_logits(cos, labels, self.t.detach(), self.m) * self.s
            return F.cross_entropy(logits, labels), logits

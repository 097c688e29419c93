"""OrthoHash loss ("One Loss for All", Hoe et al., NeurIPS 2021) as used by CSCE-Net.

``loss = ce · L_cls + quan · L_quan``:

* ``L_cls`` — margin softmax on the cosines between the continuous code and fixed hash centres,
  scaled by ``s``. ``margin_type="arc"`` adds the margin to the angle of the true class
  (``cos(acos(c) + m)``, cosines clamped to ±0.99999 first, for every class), ``"cos"`` subtracts it
  from the cosine. Single-label data (CSCE-Net's change): the margin of each sample is drawn from
  N(m, ``elastic_std``) ("elastic" margin; ``elastic_std=0`` gives OrthoHash's fixed margin), and the
  loss is the cross-entropy with the arg-max class. Multi-label data: a fixed margin on every
  positive class and ``label_smoothing`` (cross-entropy against the label vector divided by its
  sum), ``bce`` or ``imbalance`` (BCE re-weighted to 1/num_classes on confident negatives).
* ``L_quan`` — how far the code is from its binary target: ``cs`` = 1 − cos(c, b) per sample,
  ``l1``/``l2`` element-wise; ``c = 2·hardtanh(v, ±0.5)`` in CSCE-Net (``clip_codes=True``; plain
  OrthoHash uses ``c = v``), ``b = binarize(c)`` (CSCE-Net: the dynamic sign function; default: the
  sign), always detached.

Deviation from the reference: a multi-label row with no positive label gives NaN there (division by
a zero label sum); here its smoothed target is all zero, so it adds nothing to ``L_cls``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bitseek.errors import ConfigError, InputError

__all__ = ["OrthoHashLoss", "margin_logits"]

_ACOS_CLAMP = 0.99999  # the reference clamp before acos (keeps the gradient finite)


def margin_logits(cos: Tensor, margins: Tensor, s: float, margin_type: str) -> Tensor:
    """Scaled logits with per-entry ``margins`` (B, C) (zero off the target classes)."""
    if margin_type == "arc":
        return s * torch.cos(torch.acos(cos.clamp(-_ACOS_CLAMP, _ACOS_CLAMP)) + margins)
    if margin_type == "cos":
        return s * (cos - margins)
    raise ConfigError(f"margin_type must be 'arc' or 'cos', got {margin_type!r}")


class OrthoHashLoss(nn.Module):
    """Margin cross-entropy to fixed centres + quantisation towards a (dynamic) sign target."""

    def __init__(self, s: float = 10.0, m: float = 0.15, margin_type: str = "arc", elastic_std: float = 0.125,
                 multilabel: bool = False, multilabel_loss: str = "label_smoothing", ce: float = 1.0,
                 quan: float = 1.0, quan_type: str = "cs", clip_codes: bool = True) -> None:
        super().__init__()
        if margin_type not in ("arc", "cos"):
            raise ConfigError(f"margin_type must be 'arc' or 'cos', got {margin_type!r}")
        if multilabel_loss not in ("label_smoothing", "bce", "imbalance"):
            raise ConfigError(f"multilabel_loss must be label_smoothing, bce or imbalance, got {multilabel_loss!r}")
        if quan_type not in ("cs", "l1", "l2"):
            raise ConfigError(f"quan_type must be cs, l1 or l2, got {quan_type!r}")
        if s <= 0 or elastic_std < 0 or ce < 0 or quan < 0:
            raise ConfigError(f"OrthoHashLoss: need s > 0 and elastic_std, ce, quan >= 0 "
                              f"(got s={s}, elastic_std={elastic_std}, ce={ce}, quan={quan})")
        self.s, self.m, self.margin_type = float(s), float(m), margin_type
        self.elastic_std = float(elastic_std)
        self.multilabel, self.multilabel_loss = multilabel, multilabel_loss
        self.ce, self.quan, self.quan_type = float(ce), float(quan), quan_type
        self.clip_codes = clip_codes

    # ------------------------------------------------------------------ classification
    def classification(self, cos: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """``L_cls`` from cosines (B, C) and labels: multi-hot (B, C) or class ids (B,)."""
        n_cls = cos.shape[1]
        if labels.dim() == 1:
            if self.multilabel:
                raise InputError("OrthoHashLoss: multi-label training needs multi-hot labels (B, C), got class ids")
            target = labels.long()
        elif labels.dim() == 2 and labels.shape[1] == n_cls:
            target = labels.argmax(dim=1)
        else:
            raise InputError(f"OrthoHashLoss: labels must be (B,) ids or (B, {n_cls}) multi-hot, "
                             f"got shape {tuple(labels.shape)}")
        cos = cos.float()
        if not self.multilabel:
            onehot = F.one_hot(target, n_cls).to(cos.dtype)
            margin = torch.full((cos.shape[0], 1), self.m, device=cos.device, dtype=cos.dtype)
            if self.elastic_std > 0:
                margin = margin + self.elastic_std * torch.randn_like(margin)
            logits = margin_logits(cos, onehot * margin, self.s, self.margin_type)
            return {"cls": F.cross_entropy(logits, target)}
        y = labels.to(cos.dtype)
        logits = margin_logits(cos, y * self.m, self.s, self.margin_type)
        if self.multilabel_loss == "label_smoothing":
            weights = y / y.sum(dim=1, keepdim=True).clamp_min(1.0)
            return {"cls": -(weights * F.log_softmax(logits, dim=1)).sum(dim=1).mean()}
        bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        if self.multilabel_loss == "bce":
            return {"cls": bce.mean()}
        # "imbalance": confident, correct negatives weigh 1/C; positives and mistakes weigh 1
        correct = (torch.sigmoid(logits) >= 0.7) == (y > 0)
        mask = torch.where((y > 0) | ~correct, torch.ones_like(bce), torch.full_like(bce, 1.0 / n_cls))
        return {"cls": (bce * mask).sum() / (mask.sum() + 1e-7),
                "multiclass_acc": correct.float().mean()}

    # ------------------------------------------------------------------ quantisation
    def quantization(self, codes: Tensor, binarize: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """``L_quan`` of continuous codes (B, bits) against ``binarize(c)`` (default: sign)."""
        c = codes.float()
        if self.clip_codes:
            c = 2.0 * F.hardtanh(c, -0.5, 0.5)
        with torch.no_grad():
            b = (binarize(c) if binarize is not None else c.sign()).to(c.dtype)
        if self.quan_type == "cs":
            return (1.0 - F.cosine_similarity(c, b, dim=1)).mean()
        if self.quan_type == "l1":
            return (c - b).abs().mean()
        return (c - b).pow(2).mean()

    def forward(self, cos: Tensor, codes: Tensor, labels: Tensor,
                binarize: Callable[[Tensor], Tensor] | None = None) -> dict[str, Tensor]:
        """Return ``{"loss", "cls", "quan"}`` (scalar tensors; no host synchronisation)."""
        if cos.shape[0] != codes.shape[0] or cos.shape[0] != labels.shape[0]:
            raise InputError(f"OrthoHashLoss: batch sizes differ (cosines {cos.shape[0]}, codes {codes.shape[0]}, "
                             f"labels {labels.shape[0]})")
        out = self.classification(cos, labels)
        quan = self.quantization(codes, binarize) if self.quan != 0 else codes.new_zeros((), dtype=torch.float32)
        out["quan"] = quan
        out["loss"] = self.ce * out["cls"] + self.quan * quan
        return out

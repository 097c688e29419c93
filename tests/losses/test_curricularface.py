"""CurricularFace against a direct transcription of the paper's rule (in-place masked updates, as the
official head is written), the curriculum EMA, and the gradient where the target cosine is 1."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bitseek.errors import ConfigError, InputError
from bitseek.losses.curricularface import CurricularFace


def reference(x, kernel, labels, t, m, s):
    """Row-by-row CurricularFace (independent of the vectorised code): (loss, logits, new t)."""
    cos = (F.normalize(x, dim=1) @ F.normalize(kernel, dim=0)).clamp(-1, 1)
    target = cos[torch.arange(len(labels)), labels]
    t_new = 0.01 * target.mean() + 0.99 * t
    out = cos.clone()
    for i, y in enumerate(labels.tolist()):
        ct = float(target[i])
        ctm = ct * math.cos(m) - math.sqrt(max(1 - ct * ct, 1e-7)) * math.sin(m)
        for j in range(cos.shape[1]):
            c = float(cos[i, j])
            if j == y:
                out[i, j] = ctm if ct > math.cos(math.pi - m) else ct - math.sin(math.pi - m) * m
            elif c > ctm:
                out[i, j] = c * (float(t_new) + c)
    logits = out * s
    return F.cross_entropy(logits, labels), logits, t_new


def test_matches_the_rule_and_updates_t_by_ema():
    torch.manual_seed(0)
    head = CurricularFace(8, 5, m=0.5, s=64.0)
    head.t.fill_(0.3)
    x = torch.randn(7, 8)
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1])
    with torch.no_grad():  # make some negatives hard and one target obtuse (the linear fallback)
        head.kernel[:, 2] = -x[2] / x[2].norm() * 0.9 + 0.1 * head.kernel[:, 2]
    want_loss, want_logits, want_t = reference(x, head.kernel.detach(), y, torch.tensor(0.3), 0.5, 64.0)
    loss, logits = head(x, y)
    assert torch.allclose(logits, want_logits, atol=1e-4)
    assert float(loss.detach()) == pytest.approx(float(want_loss), rel=1e-5)
    assert float(head.t) == pytest.approx(float(want_t), abs=1e-7)
    # some negatives were hard and some easy, so both branches ran
    cos = head.cosines(x)
    target = cos.gather(1, y.view(-1, 1))
    tm = target * math.cos(0.5) - torch.sqrt(1 - target ** 2) * math.sin(0.5)
    hard = (cos > tm).sum() - len(y)
    assert 0 < int(hard) < cos.numel() - len(y)


def test_eval_mode_keeps_t_and_the_margin_lowers_the_target_logit():
    torch.manual_seed(1)
    head = CurricularFace(4, 3).eval()
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    _, logits = head(x, y)
    assert float(head.t) == 0.0
    cos = head.cosines(x)
    assert (logits.gather(1, y.view(-1, 1)) < 64.0 * cos.gather(1, y.view(-1, 1))).all()


def test_finite_gradient_when_the_target_cosine_is_one():
    head = CurricularFace(4, 3)
    x = head.kernel.detach()[:, 1].clone().view(1, 4).requires_grad_(True)
    loss, _ = head(x, torch.tensor([1]))
    loss.backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.kernel.grad).all()


def test_bad_arguments_are_refused():
    with pytest.raises(ConfigError, match="num_classes"):
        CurricularFace(4, 1)
    with pytest.raises(ConfigError, match="m="):
        CurricularFace(4, 3, m=2.0)
    with pytest.raises(InputError, match="labels"):
        CurricularFace(4, 3)(torch.randn(2, 4), torch.tensor([0, 1, 2]))

"""OrthoHash loss against plain per-sample reference computations (the released formulas)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bitseek.errors import ConfigError, InputError
from bitseek.losses.orthohash import OrthoHashLoss

torch.set_num_threads(1)


def _cosines(b: int, c: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, generator=g, dtype=torch.float64) * 1.8 - 0.9


def _logsumexp(x: list[float]) -> float:
    mx = max(x)
    return mx + math.log(sum(math.exp(v - mx) for v in x))


def _ref_single(cos: np.ndarray, target: np.ndarray, margins: np.ndarray, s: float, kind: str) -> float:
    total = 0.0
    for i in range(cos.shape[0]):
        row = []
        for j in range(cos.shape[1]):
            m = margins[i] if j == target[i] else 0.0
            if kind == "arc":
                row.append(s * math.cos(math.acos(min(max(cos[i, j], -0.99999), 0.99999)) + m))
            else:
                row.append(s * (cos[i, j] - m))
        total += _logsumexp(row) - row[target[i]]
    return total / cos.shape[0]


@pytest.mark.parametrize("kind", ["arc", "cos"])
def test_single_label_fixed_margin_matches_reference(kind: str) -> None:
    cos = _cosines(6, 5)
    target = np.array([0, 4, 2, 2, 1, 3])
    labels = torch.eye(5, dtype=torch.float64)[torch.from_numpy(target)]
    loss = OrthoHashLoss(s=10, m=0.15, margin_type=kind, elastic_std=0.0, quan=0.0)
    out = loss(cos, torch.randn(6, 8), labels)
    ref = _ref_single(cos.numpy(), target, np.full(6, 0.15), 10.0, kind)
    assert out["cls"].item() == pytest.approx(ref, rel=1e-5)
    assert out["loss"].item() == pytest.approx(ref, rel=1e-5) and out["quan"].item() == 0.0


def test_single_label_elastic_margin_matches_reference() -> None:
    cos = _cosines(8, 4, seed=1)
    target = np.array([0, 1, 2, 3, 3, 2, 1, 0])
    labels = torch.from_numpy(target)  # class ids are accepted too
    loss = OrthoHashLoss(s=10, m=0.15, margin_type="arc", elastic_std=0.125, quan=0.0)
    torch.manual_seed(7)
    got = loss(cos, torch.randn(8, 8), labels)["cls"].item()
    torch.manual_seed(7)
    torch.randn(8, 8)  # the codes drawn above
    margins = 0.15 + 0.125 * torch.randn(8, 1, dtype=torch.float32)
    ref = _ref_single(cos.float().numpy().astype(np.float64), target, margins[:, 0].numpy(), 10.0, "arc")
    assert got == pytest.approx(ref, rel=1e-4)
    fixed = _ref_single(cos.numpy(), target, np.full(8, 0.15), 10.0, "arc")
    assert abs(got - fixed) > 1e-4  # the margin really is random per sample


def _ref_multi(cos: np.ndarray, y: np.ndarray, s: float, m: float, loss: str) -> float:
    n, c = cos.shape
    logits = np.empty_like(cos)
    for i in range(n):
        for j in range(c):
            logits[i, j] = s * math.cos(math.acos(min(max(cos[i, j], -0.99999), 0.99999)) + m * y[i, j])
    if loss == "label_smoothing":
        total = 0.0
        for i in range(n):
            lse = _logsumexp(list(logits[i]))
            k = max(y[i].sum(), 1.0)
            total += sum(-(y[i, j] / k) * (logits[i, j] - lse) for j in range(c))
        return total / n
    bce = np.zeros_like(cos)
    for i in range(n):
        for j in range(c):
            x, t = logits[i, j], y[i, j]
            bce[i, j] = max(x, 0) - x * t + math.log1p(math.exp(-abs(x)))
    if loss == "bce":
        return float(bce.mean())
    mask = np.full_like(cos, 1.0 / c)
    for i in range(n):
        for j in range(c):
            p = 1 / (1 + math.exp(-logits[i, j]))
            correct = (p >= 0.7) == (y[i, j] == 1)
            if y[i, j] == 1 or not correct:
                mask[i, j] = 1.0
    return float((bce * mask).sum() / (mask.sum() + 1e-7))


@pytest.mark.parametrize("kind", ["label_smoothing", "bce", "imbalance"])
def test_multilabel_matches_reference(kind: str) -> None:
    cos = _cosines(5, 6, seed=2)
    y = np.array([[1, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 1], [1, 1, 1, 0, 0, 0],
                  [0, 1, 0, 1, 0, 1], [0, 0, 0, 0, 1, 0]], dtype=np.float64)
    loss = OrthoHashLoss(s=10, m=0.15, margin_type="arc", multilabel=True, multilabel_loss=kind, quan=0.0)
    out = loss(cos, torch.randn(5, 8), torch.from_numpy(y))
    assert out["cls"].item() == pytest.approx(_ref_multi(cos.numpy(), y, 10.0, 0.15, kind), rel=1e-5)
    if kind == "imbalance":
        assert 0.0 <= out["multiclass_acc"].item() <= 1.0


def test_multilabel_row_without_labels_is_finite() -> None:
    y = torch.tensor([[1.0, 0, 1], [0, 0, 0]])
    out = OrthoHashLoss(multilabel=True, quan=0.0)(_cosines(2, 3), torch.randn(2, 4), y)
    ref = _ref_multi(_cosines(2, 3).numpy()[:1], y.numpy()[:1].astype(np.float64), 10.0, 0.15, "label_smoothing")
    assert out["cls"].item() == pytest.approx(ref / 2, rel=1e-5)  # the empty row adds 0 to the batch mean


def test_quantization_cs_l1_l2_against_reference() -> None:
    v = torch.tensor([[0.9, -0.2, 0.05, -0.01], [-0.3, 0.4, 0.6, -0.7]], dtype=torch.float64)
    c = np.clip(v.numpy(), -0.5, 0.5) * 2
    b = np.sign(c)
    ref = {
        "cs": np.mean([1 - (c[i] @ b[i]) / (np.linalg.norm(c[i]) * np.linalg.norm(b[i])) for i in range(2)]),
        "l1": np.abs(c - b).mean(),
        "l2": ((c - b) ** 2).mean(),
    }
    labels = torch.eye(3)[[0, 1]]
    for kind, want in ref.items():
        loss = OrthoHashLoss(ce=0.0, quan=1.0, quan_type=kind)
        out = loss(_cosines(2, 3), v, labels)
        assert out["quan"].item() == pytest.approx(want, rel=1e-6), kind
        assert out["loss"].item() == pytest.approx(want, rel=1e-6)


def test_quantization_uses_detached_custom_target_and_plain_codes() -> None:
    v = torch.tensor([[0.2, -0.1, 0.3, 0.05]], requires_grad=True)
    seen = {}

    def binarize(c: torch.Tensor) -> torch.Tensor:
        seen["c"] = c.clone()
        return torch.ones_like(c)

    loss = OrthoHashLoss(ce=0.0, quan=2.0, quan_type="l2", clip_codes=False)
    out = loss(_cosines(1, 2).float(), v, torch.tensor([[1.0, 0.0]]), binarize=binarize)
    assert torch.allclose(seen["c"], v.detach())
    want = 2.0 * ((v.detach() - 1) ** 2).mean()
    assert out["loss"].item() == pytest.approx(want.item(), rel=1e-6)
    out["loss"].backward()
    assert torch.allclose(v.grad, 2.0 * 2 * (v.detach() - 1) / 4)  # gradient only through c, not the target


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="margin_type"):
        OrthoHashLoss(margin_type="sphere")
    with pytest.raises(ConfigError, match="quan_type"):
        OrthoHashLoss(quan_type="l3")
    with pytest.raises(ConfigError, match="multilabel_loss"):
        OrthoHashLoss(multilabel_loss="focal")
    loss = OrthoHashLoss()
    with pytest.raises(InputError, match="labels must be"):
        loss(_cosines(2, 3), torch.randn(2, 4), torch.zeros(2, 5))
    with pytest.raises(InputError, match="batch sizes differ"):
        loss(_cosines(2, 3), torch.randn(3, 4), torch.zeros(2, 3))
    with pytest.raises(InputError, match="multi-hot"):
        OrthoHashLoss(multilabel=True)(_cosines(2, 3), torch.randn(2, 4), torch.tensor([0, 1]))

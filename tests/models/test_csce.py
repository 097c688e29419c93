"""CSCE-Net: windows, attention-guided extraction, DSF, hash centres, model, training, configs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from bitseek.config import from_dict, load_yaml
from bitseek.errors import ConfigError, InputError
from bitseek.models.csce import (
    CSCEConfig,
    CSCENet,
    attention_guided_extraction,
    count_windows,
    dynamic_sign,
    dsf_balance_value,
)
from bitseek.models.hash_centers import make_hash_centers, pairwise_distance_stats
from bitseek.registry import MODELS, create_model

torch.set_num_threads(1)  # the 2 cores are shared; more threads only contend
REPO = Path(__file__).resolve().parents[2]


def _mini(**kw) -> CSCENet:
    args = dict(bits=16, num_classes=4, backbone="resnet-mini", image_size=32,
                backbone_args={"widths": [8, 16, 32, 64]}, aspp_dilations=[1, 2, 3])
    args.update(kw)
    return create_model("csce", **args)


# --------------------------------------------------------------------------- windows and fusion


def test_window_count_follows_the_stage4_map() -> None:
    assert count_windows((7, 7), [2, 4]) == 52  # the released constant for 224 px ResNet-50
    assert count_windows((4, 4), [2, 4]) == 10
    assert count_windows((5, 3), [2]) == 8
    assert _mini().n_windows == 10


def test_resnet50_csce_dimensions() -> None:
    model = create_model("csce", bits=64, num_classes=100, backbone="resnet50", local_branch="attention")
    assert model.stage4_size == (7, 7) and model.n_windows == 52  # 224 px: the released Conv1d(52, 1)
    assert model.dim == 1024 and model.window_fuse.in_channels == 52
    assert [c.out_channels for c in model.windows.convs] == [256, 64]  # 1024 / 2², 1024 / 4²
    assert model.hash_fc.in_features == 2048 and model.thresh_fc.in_features == 2048


def _reference_fusion(local: np.ndarray, g: np.ndarray) -> np.ndarray:
    out = np.empty_like(local)
    for b in range(local.shape[0]):
        flat = local[b].reshape(local.shape[1], -1)
        out[b] = (flat - g[b] @ (g[b].T @ flat) / np.sum(g[b] ** 2)).reshape(local.shape[1:])
    return out


def test_attention_guided_extraction_matches_the_code_formula() -> None:
    g = torch.Generator().manual_seed(0)
    local = torch.randn(3, 8, 4, 5, generator=g, dtype=torch.float64)
    windows = torch.randn(3, 8, 6, generator=g, dtype=torch.float64)
    got = attention_guided_extraction(local, windows)
    np.testing.assert_allclose(got.numpy(), _reference_fusion(local.numpy(), windows.numpy()), rtol=1e-10)


def test_fusion_is_orthogonal_for_one_context_direction_and_contracts_otherwise() -> None:
    g = torch.Generator().manual_seed(1)
    local = torch.randn(2, 16, 3, 3, generator=g, dtype=torch.float64)
    direction = torch.randn(2, 16, 1, generator=g, dtype=torch.float64)
    rank1 = direction * torch.randn(2, 1, 5, generator=g, dtype=torch.float64)  # 5 parallel windows
    for windows in (direction, rank1):
        orth = attention_guided_extraction(local, windows).flatten(2)
        inner = windows.transpose(1, 2) @ orth
        assert inner.abs().max().item() < 1e-10 * local.abs().max().item() * windows.abs().max().item() * 100
    # general windows: the Frobenius normaliser is not a projection, but it never increases the
    # component along the context (I − WWᵀ/‖W‖²_F has eigenvalues in [0, 1] on span(W))
    windows = torch.randn(2, 16, 6, generator=g, dtype=torch.float64)
    orth = attention_guided_extraction(local, windows).flatten(2)
    before = torch.linalg.matrix_norm(windows.transpose(1, 2) @ local.flatten(2))
    after = torch.linalg.matrix_norm(windows.transpose(1, 2) @ orth)
    assert torch.all(after < before)
    assert torch.all(after > 1e-3 * before)  # and indeed not orthogonal


# --------------------------------------------------------------------------- dynamic sign


def _reference_dsf(v: np.ndarray, t: np.ndarray, balance: float) -> np.ndarray:
    out = np.empty_like(v)
    for i in range(v.shape[0]):
        fill = -1.0 if (v[i] > 0).sum() > balance else 1.0
        row = v[i].copy()
        amb = (row < t[i]) & (row > -t[i])
        row[amb] = fill
        out[i] = np.sign(row)
    return out


def test_dynamic_sign_matches_the_released_loop() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(0, 0.02, (50, 64)).astype(np.float32)
    v[:10] += 0.015  # some rows with many positives
    t = rng.uniform(-0.01, 0.01, (50, 1)).astype(np.float32)
    got = dynamic_sign(torch.from_numpy(v), torch.from_numpy(t), 32.0)
    np.testing.assert_array_equal(got.numpy(), _reference_dsf(v, t[:, 0], 32.0))


@pytest.mark.parametrize("bits", [16, 32, 64])
def test_dynamic_sign_balances_near_zero_bits_to_half(bits: int) -> None:
    half, t = bits // 2, torch.tensor([[0.01]])
    # half the bits clearly positive, the rest near zero with one of them slightly positive
    v = torch.cat([torch.full((1, half), 0.5), torch.full((1, half), -0.001)], dim=1)
    v[0, half] = 0.001
    codes = dynamic_sign(v, t, dsf_balance_value("bits/2", bits))
    assert (codes > 0).sum().item() == half  # the near-zero bits went negative: balanced
    # half clearly negative, the rest near zero and slightly negative: they go positive
    v2 = torch.cat([torch.full((1, half), -0.5), torch.full((1, half), -0.001)], dim=1)
    assert (dynamic_sign(v2, t, bits / 2) > 0).sum().item() == half
    quirk = (dynamic_sign(v, t, dsf_balance_value("32", bits)) > 0).sum().item()
    if bits == 64:
        assert quirk == half  # the released 64/2 constant is right only at 64 bits
    else:
        assert quirk == bits  # at 16/32 bits it pushes every ambiguous bit positive


def test_dynamic_sign_without_dead_zone_is_sign() -> None:
    v = torch.tensor([[0.3, -0.001, 0.0, 0.002]])
    for t in (0.0, -0.01):
        assert dynamic_sign(v, torch.tensor([t]), 2.0).tolist() == [[1.0, -1.0, 0.0, 1.0]]
    with pytest.raises(InputError):
        dynamic_sign(v, torch.zeros(2, 1), 2.0)
    with pytest.raises(ConfigError):
        dsf_balance_value("half", 16)


# --------------------------------------------------------------------------- hash centres


def test_hadamard_centres_are_orthogonal() -> None:
    c = make_hash_centers(100, 64)
    assert c.method == "hadamard" and c.satisfied and c.codes.shape == (100, 64)
    h = c.codes[:64]
    assert torch.equal(h @ h.t(), 64 * torch.eye(64))
    assert torch.equal(c.codes[64:100], -c.codes[:36])
    assert set(c.codes.unique().tolist()) == {-1.0, 1.0}


def test_random_centres_meet_csq_conditions_and_are_seeded() -> None:
    c = make_hash_centers(70, 32, seed=1)  # more classes than 2·32 Hadamard rows
    assert c.method == "hadamard+random" and c.satisfied
    d_min, d_mean = pairwise_distance_stats(c.codes.numpy())
    assert d_min > 32 / 4 and d_mean >= 32 / 2
    codes = c.codes.numpy()
    brute = [(codes[i] != codes[j]).sum() for i in range(70) for j in range(i + 1, 70)]
    assert d_min == min(brute) == c.min_distance and d_mean == pytest.approx(np.mean(brute))
    assert torch.equal(c.codes[:64], make_hash_centers(64, 32).codes)
    assert (c.codes[64:].sum(dim=1) == 0).all()  # balanced random rows
    assert torch.equal(c.codes, make_hash_centers(70, 32, seed=1).codes)
    assert not torch.equal(c.codes, make_hash_centers(70, 32, seed=2).codes)


def test_centres_fallbacks() -> None:
    c = make_hash_centers(10, 24, seed=0)  # not a power of two: random balanced codes for every class
    assert c.method == "random" and c.satisfied and c.codes.shape == (10, 24)
    assert (c.codes.sum(dim=1) == 0).all()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hard = make_hash_centers(100, 16)  # impossible: warn, keep the best draw
    assert not hard.satisfied and any("CSQ's conditions" in str(w.message) for w in caught)
    assert hard.min_distance == pairwise_distance_stats(hard.codes.numpy())[0]


# --------------------------------------------------------------------------- model


def test_forward_shapes_threshold_and_encode() -> None:
    torch.manual_seed(0)
    model = _mini(signt=0.01)
    out = model(torch.randn(5, 3, 32, 32))
    assert out["codes"].shape == (5, 16) and out["logits"].shape == (5, 4)
    assert out["threshold"].abs().max().item() <= 0.01 + 1e-8
    assert out["logits"].abs().max().item() <= 1 + 1e-6
    model.eval()
    codes = model.encode({"image": torch.randn(5, 3, 32, 32)})
    assert codes.shape == (5, 16) and set(codes.unique().tolist()) <= {-1.0, 1.0} and not codes.requires_grad


def test_both_local_branches_build() -> None:
    aspp, att = _mini(local_branch="aspp"), _mini(local_branch="attention")
    assert hasattr(aspp.local.aspp, "branches") and isinstance(att.local.aspp, torch.nn.Identity)
    assert att.local.attention.conv1.in_channels == 32  # stage-3 channels of the mini backbone


def test_bad_configs_and_inputs() -> None:
    with pytest.raises(ConfigError, match="local_branch"):
        _mini(local_branch="transformer")
    with pytest.raises(ConfigError, match="not divisible"):
        _mini(local_dim=40)
    with pytest.raises(ConfigError, match="smaller than the 4x4 window"):
        _mini(image_size=16)
    with pytest.raises(ConfigError, match="dsf_balance"):
        _mini(dsf_balance="most")
    with pytest.raises(ConfigError, match="unknown key"):
        MODELS.config("csce", bitz=16)
    model = _mini()
    with pytest.raises(InputError, match="image_size=32"):
        model(torch.randn(1, 3, 64, 64))
    with pytest.raises(InputError, match="'label'"):
        model.training_step({"image": torch.randn(2, 3, 32, 32)})


def test_threshold_head_is_frozen_and_the_rest_learns() -> None:
    torch.manual_seed(0)
    model = _mini()
    batch = {"image": torch.randn(4, 3, 32, 32), "label": torch.eye(4)}
    out = model.training_step(batch)
    assert set(out) >= {"loss", "cls", "quan"} and out["loss"].dim() == 0
    out["loss"].backward()
    assert model.thresh_fc.weight.grad is None and not model.thresh_fc.weight.requires_grad
    for p in (model.hash_fc.weight, model.window_fuse.weight, model.backbone.conv1.weight,
              model.local.attention.conv2.weight, model.windows.convs[1].weight):
        assert p.grad is not None and p.grad.abs().sum().item() > 0
    assert "centers" in model.state_dict() and not any(p is model.centers for p in model.parameters())


def test_multilabel_training_step() -> None:
    model = _mini(multilabel=True)
    labels = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    out = model.training_step({"image": torch.randn(3, 3, 32, 32), "label": labels})
    assert torch.isfinite(out["loss"])


def _toy_images(n_per_class: int = 4, classes: int = 4, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Each class is a bright quadrant on noise: trivially separable."""
    g = torch.Generator().manual_seed(0)
    imgs, labels = [], []
    h = size // 2
    for c in range(classes):
        for _ in range(n_per_class):
            x = 0.3 * torch.randn(3, size, size, generator=g)
            r, col = divmod(c, 2)
            x[:, r * h:(r + 1) * h, col * h:(col + 1) * h] += 2.0
            imgs.append(x)
            labels.append(c)
    return torch.stack(imgs), torch.eye(classes)[torch.tensor(labels)]


def test_training_reduces_loss_and_separates_codes() -> None:
    torch.manual_seed(0)
    images, labels = _toy_images()
    model = _mini(bits=16, num_classes=4, elastic_std=0.0)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    batch = {"image": images, "label": labels}
    model.eval()
    with torch.no_grad():
        first = model.training_step(batch)["loss"].item()
    model.train()
    for _ in range(12):
        opt.zero_grad()
        model.training_step(batch)["loss"].backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        last = model.training_step(batch)["loss"].item()
        codes = model.encode(batch)
    assert last < 0.5 * first
    cls = labels.argmax(1)
    dist = (16 - codes @ codes.t()) / 2
    same = cls[:, None] == cls[None, :]
    assert dist[same].mean() < 0.5 * dist[~same].mean()


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize("dataset, topk, multilabel", [
    ("imagenet100", 1000, False), ("nuswide", 5000, True), ("coco", 5000, True), ("cifar10", 0, False)])
@pytest.mark.parametrize("bits", [16, 32, 64])
def test_configs(dataset: str, topk: int, multilabel: bool, bits: int) -> None:
    path = REPO / "configs" / "csce" / f"{dataset}-{bits}.yaml"
    raw = load_yaml(path)
    model = from_dict(CSCEConfig, raw["model"], "model")
    assert model.bits == bits and model.multilabel is multilabel and model.name == "csce"
    assert raw["eval"] == {"protocol": "map_at_topk", "topk": topk}
    assert raw["optim"]["name"] == "rmsprop" and raw["optim"]["lr"] == 1e-5 and raw["optim"]["weight_decay"] == 1e-5
    assert raw["data"]["name"] == dataset and raw["data"]["batch_size"] == 50
    from bitseek.config import load_config

    cfg = load_config(path)
    assert cfg.model.bits == bits and cfg.eval.topk == topk


def test_checkpoint_round_trip(tmp_path) -> None:
    from bitseek.train import checkpoint

    torch.manual_seed(0)
    model = _mini(bits=32, num_classes=70, local_branch="attention").eval()  # random centres included
    checkpoint.save_model(tmp_path, model, model.cfg)
    loaded = checkpoint.load_model(tmp_path).eval()
    images = {"image": torch.randn(3, 3, 32, 32)}
    assert torch.equal(loaded.centers, model.centers)
    assert torch.equal(loaded.encode(images), model.encode(images))

"""CVNet model: shapes, the pre-ReLU stage-3 tap, GeM/whitening head, cross-scale correlation against an
independent float64 computation (interpolation matrices, einsum), cached == uncached scores, determinism."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bitseek.errors import ConfigError, InputError
from bitseek.models.cvnet import CVNet, pyramid_size, resize4d
from bitseek.registry import MODELS

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def r50() -> CVNet:
    torch.manual_seed(0)
    model = MODELS.create(MODELS.config("cvnet", depth=50)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial BN statistics: pre-activation maps get both signs
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.bias.uniform_(-0.3, 0.3, generator=g)
        model.pool.p.fill_(2.6)
    return model


def test_config_and_registry() -> None:
    cfg = MODELS.config("cvnet", depth=101)
    assert cfg.depth == 101 and cfg.reduction_dim == 2048 and cfg.rerank_scales == [0.25, 0.5, 1.0]
    with pytest.raises(ConfigError, match="model.depth must be 50 or 101"):
        MODELS.config("cvnet", depth=34)
    with pytest.raises(ConfigError, match="rerank_scales"):
        MODELS.config("cvnet", rerank_scales=[0.5, 0.0])


def test_structure_matches_the_published_shapes(r50: CVNet) -> None:
    sd = r50.state_dict()
    rerank = {k: v for k, v in sd.items() if k.startswith("rerank.")}
    assert len(rerank) == 61
    assert sum(p.numel() for n, p in r50.named_parameters() if n.startswith("rerank.")) == 7_486_114
    assert sd["pool.p"].shape == (1,) and r50.pool.p.requires_grad
    assert sd["whiten.weight"].shape == (2048, 2048) and sd["whiten.bias"].shape == (2048,)
    for j in range(3):
        assert sd[f"rerank.scale_convs.{j}.weight"].shape == (256, 1024, 3, 3)
        assert f"rerank.scale_convs.{j}.bias" not in sd
    convs = [(k, tuple(v.shape)) for k, v in rerank.items() if k.endswith("query_conv.weight")]
    assert [s for _, s in convs] == [(16, 9, 5, 5), (16, 16, 3, 3), (32, 16, 3, 3), (32, 32, 3, 3), (32, 32, 3, 3),
                                     (64, 32, 3, 3), (64, 64, 3, 3), (64, 64, 3, 3), (128, 64, 3, 3)]
    norms = [m for m in r50.rerank.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 9 and all(n.num_groups == 4 for n in norms)
    assert sd["rerank.learner.classifier.0.weight"].shape == (128, 128)
    assert sd["rerank.learner.classifier.2.weight"].shape == (2, 128)


def test_global_descriptor_is_gem_whitening_l2(r50: CVNet) -> None:
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        g = r50.global_descriptor(x)
        _, f4 = r50.backbone.forward_intermediates(x, (3, 4))
        p = r50.pool.p.item()
        pooled = f4.double().clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1 / p)
        want = F.normalize(pooled @ r50.whiten.weight.double().T + r50.whiten.bias.double(), dim=1)
    assert g.shape == (2, 2048) and g.dtype == torch.float32
    torch.testing.assert_close(g.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g.norm(dim=1), torch.ones(2))
    assert torch.equal(r50.embed({"image": x}), g) and r50.dim == r50.embed_dim == 2048


def test_rerank_features_are_the_last_stage3_block_before_relu(r50: CVNet) -> None:
    """Block 13 of R50 counted from the first stage = layer3[5]; its bn3 output + its input, via hooks."""
    blocks = [b for layer in (r50.backbone.layer1, r50.backbone.layer2, r50.backbone.layer3) for b in layer]
    assert len(blocks) == 13
    seen: dict[str, torch.Tensor] = {}
    h1 = blocks[12].conv1.register_forward_pre_hook(lambda m, inp: seen.update(inp=inp[0].clone()))
    h2 = blocks[12].bn3.register_forward_hook(lambda m, inp, out: seen.update(bn3=out.clone()))
    x = torch.randn(1, 3, 80, 64)
    try:
        with torch.no_grad():
            f3 = r50.rerank_features(x)
    finally:
        h1.remove()
        h2.remove()
    assert f3.shape == (1, 1024, 5, 4)
    assert torch.equal(f3, seen["bn3"] + seen["inp"])
    assert (f3 < 0).any()


def _interp_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """1-D bilinear resampling with aligned corners as a (n_out, n_in) float64 matrix."""
    a = torch.zeros(n_out, n_in, dtype=torch.float64)
    for o in range(n_out):
        src = 0.0 if n_out == 1 else o * (n_in - 1) / (n_out - 1)
        i0 = min(int(math.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        t = src - i0
        a[o, i0] += 1 - t
        a[o, i1] += t
    return a


def _naive_correlation(model: CVNet, fq: torch.Tensor, fk: torch.Tensor) -> torch.Tensor:
    fq, fk = fq.double(), fk.double()
    hq, wq = fq.shape[-2:]
    hk, wk = fk.shape[-2:]
    levels = []
    for s, conv in zip((0.25, 0.5, 1.0), model.rerank.scale_convs):
        pair = []
        for f, (h, w) in ((fq, (hq, wq)), (fk, (hk, wk))):
            nh, nw = round(h * math.sqrt(s)), round(w * math.sqrt(s))
            r = torch.einsum("Hh,Ww,bchw->bcHW", _interp_matrix(h, nh), _interp_matrix(w, nw), f)
            pair.append(F.conv2d(r, conv.weight.double(), padding=1))
        levels.append(pair)
    out = []
    for q, _ in levels:
        for _, k in levels:
            dots = torch.einsum("bcij,bckl->bijkl", q, k)
            nq, nk = q.norm(dim=1), k.norm(dim=1)
            corr = dots / (nq[:, :, :, None, None] * nk[:, None, None] + 1e-8)
            big = torch.einsum("Ii,Jj,Kk,Ll,bijkl->bIJKL", _interp_matrix(q.shape[2], hq), _interp_matrix(q.shape[3], wq),
                               _interp_matrix(k.shape[2], hk), _interp_matrix(k.shape[3], wk), corr)
            out.append(big)
    return torch.stack(out, 1).clamp(min=0)


def test_pyramid_sizes_round_half_to_even() -> None:
    assert [pyramid_size(32, 24, s) for s in (0.25, 0.5, 1.0)] == [(16, 12), (23, 17), (32, 24)]
    assert pyramid_size(5, 7, 0.25) == (2, 4)  # 2.5 -> 2 and 3.5 -> 4: Python's round, not floor(x + 0.5)


def test_resize4d_against_interpolation_matrices() -> None:
    corr = torch.randn(2, 3, 4, 2, 5)
    want = torch.einsum("Ii,Jj,Kk,Ll,bijkl->bIJKL", _interp_matrix(3, 5), _interp_matrix(4, 6),
                        _interp_matrix(2, 4), _interp_matrix(5, 7), corr.double())
    torch.testing.assert_close(resize4d(corr, (5, 6, 4, 7)).double(), want, rtol=1e-6, atol=1e-6)


def test_cross_scale_correlation_against_naive(r50: CVNet) -> None:
    fq = torch.randn(1, 1024, 6, 5)
    fk = torch.randn(1, 1024, 4, 7)
    with torch.no_grad():
        got = r50.rerank.correlation(fq, fk)
        want = _naive_correlation(r50, fq, fk)
    assert got.shape == (1, 9, 6, 5, 4, 7)
    assert (got >= 0).all() and (want == 0).any()
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_learner_block_shapes(r50: CVNet) -> None:
    x = torch.rand(1, 9, 32, 24, 24, 32)
    shapes = []
    with torch.no_grad():
        for block in r50.rerank.learner.blocks:
            x = block(x)
            shapes.append(tuple(x.shape))
    assert shapes == [(1, 16, 16, 12, 12, 16), (1, 32, 8, 6, 6, 8), (1, 64, 4, 3, 3, 4), (1, 128, 4, 3, 3, 4)]


def test_rerank_score_is_a_probability_and_equals_the_cached_path(r50: CVNet) -> None:
    q = torch.randn(2, 3, 96, 64)
    k = torch.randn(2, 3, 64, 112)
    with torch.no_grad():
        s = r50.rerank_score(q, k)
        s_again = r50.rerank_score(q, k)
        fq, fk = r50.rerank_features(q), r50.rerank_features(k)
        s_cached = r50.rerank_score_from_features(fq, fk)
        logits = r50.rerank.learner(r50.rerank.correlation(fq, fk))
        one_vs_many = r50.rerank_score_from_features(fq[:1], fk)
        half = r50.rerank_score_from_features(fq.half(), fk.half())
    assert s.shape == (2,) and ((s > 0) & (s < 1)).all()
    assert torch.equal(s, s_again)  # deterministic
    assert torch.equal(s, s_cached)
    torch.testing.assert_close(s, torch.softmax(logits, 1)[:, 1])
    torch.testing.assert_close(one_vs_many[0], s[0])
    torch.testing.assert_close(half, s, atol=1e-2, rtol=0)


def test_bad_inputs(r50: CVNet) -> None:
    with pytest.raises(InputError, match="B, 3, H, W"):
        r50.global_descriptor(torch.randn(3, 64, 64))
    with pytest.raises(InputError, match="float"):
        r50.rerank_features(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(InputError, match="batch sizes 2 and 3"):
        r50.rerank_score_from_features(torch.randn(2, 1024, 4, 4), torch.randn(3, 1024, 4, 4))
    with pytest.raises(InputError, match="1024"):
        r50.rerank_score_from_features(torch.randn(1, 512, 4, 4), torch.randn(1, 512, 4, 4))
    with pytest.raises(InputError, match="'image'"):
        r50.embed({"x": torch.randn(1, 3, 64, 64)})

"""Optimisers and learning-rate schedules, against torch's own schedulers and literal numbers."""

from __future__ import annotations

import pytest
import torch

from bitseek.config import OptimConfig
from bitseek.errors import ConfigError
from bitseek.train.optim import build_optimizer, lr_at, set_lr


def _torch_lrs(make_sched, lr: float, epochs: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make_sched(opt)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_step_schedule_is_conmh_steplr_with_a_floor() -> None:
    cfg = OptimConfig(name="adam", lr=1e-4, schedule="step", step_size=20, gamma=0.9, min_lr=1e-5)
    want = _torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=20, gamma=0.9), 1e-4, 500)
    got = [lr_at(e, cfg, 500) for e in range(500)]
    for e, (g, w) in enumerate(zip(got, want)):
        assert g == pytest.approx(max(w, 1e-5), rel=1e-9), e
    assert got[19] == pytest.approx(1e-4) and got[20] == pytest.approx(9e-5) and got[40] == pytest.approx(8.1e-5)
    assert got[439] > 1e-5 and got[440] == 1e-5  # 0.9**22 * 1e-4 < 1e-5: the floor takes over


def test_cosine_schedule_matches_torch_after_warmup() -> None:
    cfg = OptimConfig(name="sgd", lr=0.1, schedule="cosine", min_lr=0.001, warmup_epochs=3)
    got = [lr_at(e, cfg, 23) for e in range(23)]
    assert got[:3] == pytest.approx([0.1 / 3, 0.2 / 3, 0.1])  # linear warm-up, lr reached at its last epoch
    want = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=20, eta_min=0.001), 0.1, 20)
    assert got[3:] == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert lr_at(100, cfg, 23) == pytest.approx(0.001)  # past the end: stays at the floor


def test_none_schedule_and_errors() -> None:
    assert lr_at(7, OptimConfig(lr=0.5, schedule="none"), 10) == 0.5
    with pytest.raises(ConfigError, match="step_size"):
        lr_at(0, OptimConfig(schedule="step", step_size=0), 10)
    with pytest.raises(ConfigError, match="optim.name"):
        OptimConfig(name="adagrad")
    with pytest.raises(ConfigError, match="optim.schedule"):
        OptimConfig(schedule="linear")


@pytest.mark.parametrize("name, cls, extra", [
    ("adam", torch.optim.Adam, {"betas": (0.8, 0.99), "eps": 1e-7}),
    ("adamw", torch.optim.AdamW, {"betas": (0.8, 0.99), "eps": 1e-7}),
    ("rmsprop", torch.optim.RMSprop, {"momentum": 0.5, "eps": 1e-7}),
    ("sgd", torch.optim.SGD, {"momentum": 0.5}),
])
def test_build_optimizer_passes_every_setting(name, cls, extra) -> None:
    cfg = OptimConfig(name=name, lr=0.02, weight_decay=1e-5, momentum=0.5, betas=[0.8, 0.99], eps=1e-7)
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], cfg)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 0.02 and group["weight_decay"] == 1e-5
    for key, value in extra.items():
        assert group[key] == value, key


@pytest.mark.parametrize("name, fused", [("adam", True), ("adamw", True), ("sgd", True), ("rmsprop", False)])
def test_fused_step_where_torch_has_one(name, fused) -> None:
    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))]
    opt = build_optimizer(({"params": iter(params), "lr_mult": 0.5},), OptimConfig(name=name))
    assert bool(opt.param_groups[0].get("fused")) is fused
    assert len(opt.param_groups[0]["params"]) == 2  # a generator of parameters is not consumed twice
    opt = build_optimizer(params, OptimConfig(name=name, fused=False))
    assert not opt.param_groups[0].get("fused")


def test_fused_adam_takes_the_same_steps_as_the_loop() -> None:
    torch.manual_seed(0)
    start = [torch.randn(64, 32), torch.randn(32)]
    runs = []
    for fused in (True, False):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = build_optimizer(params, OptimConfig(lr=1e-2, weight_decay=1e-3, fused=fused))
        gen = torch.Generator().manual_seed(1)
        for _ in range(5):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        runs.append(params)
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_set_lr_keeps_the_ratio_between_param_groups() -> None:
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.01}], lr=0.1)
    set_lr(opt, 0.05, base_lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.005])
    set_lr(opt, 0.1, base_lr=0.1)  # scales from the initial rates, not the current ones
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.01])

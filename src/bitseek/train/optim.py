"""Optimisers and per-epoch learning-rate schedules built from ``OptimConfig``.

The schedule is a pure function of the epoch index, so resuming needs no scheduler state and can
never drift from an uninterrupted run.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from bitseek.config import OptimConfig
from bitseek.errors import ConfigError


FUSED = ("adam", "adamw", "sgd")  # the optimisers torch implements as one kernel over all parameters


def _fusable(groups: list[Any]) -> bool:
    """Every parameter a floating CPU/CUDA tensor: the devices and dtypes torch's fused kernels take."""
    tensors = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    return bool(tensors) and all(isinstance(p, torch.Tensor) and p.is_floating_point()
                                 and p.device.type in ("cpu", "cuda") for p in tensors)


def _group(group: dict[str, Any], lr: float) -> dict[str, Any]:
    """A param-group dict with its parameters as a list and ``lr_mult`` turned into its ``lr``."""
    out = {k: v for k, v in group.items() if k != "lr_mult"}
    out["params"] = [group["params"]] if isinstance(group["params"], torch.Tensor) else list(group["params"])
    if "lr_mult" in group:
        out["lr"] = lr * float(group["lr_mult"])
    return out


def build_optimizer(params: Iterable[Any], cfg: OptimConfig) -> torch.optim.Optimizer:
    """A param-group dict may carry ``lr_mult``: its rate is ``cfg.lr * lr_mult`` (kept through the schedule).

    ``cfg.fused`` picks torch's fused step where one exists: the same update rule as the
    per-tensor loop (equal to float rounding), about 3x faster for ConMH's 12M parameters on CPU.
    """
    params = [_group(g, cfg.lr) if isinstance(g, dict) else g for g in params]
    name = cfg.name.lower()
    fused = {"fused": True} if cfg.fused and name in FUSED and _fusable(params) else {}
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay,
                                **fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay,
                                 **fused)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **fused)
    raise ConfigError(f"optim.name: unknown optimiser {cfg.name!r} (adam, adamw, rmsprop, sgd)")


def lr_at(epoch: int, cfg: OptimConfig, total_epochs: int) -> float:
    """Learning rate for a 0-based epoch.

    ``step``: lr·gamma^(epoch // step_size), floored at min_lr (ConMH's StepLR with a floor).
    ``cosine``: half cosine from lr to min_lr over the epochs after warm-up.
    A linear warm-up over ``warmup_epochs`` applies to every schedule.
    """
    if cfg.warmup_epochs > 0 and epoch < cfg.warmup_epochs:
        return cfg.lr * (epoch + 1) / cfg.warmup_epochs
    sched = cfg.schedule.lower()
    if sched == "none":
        return cfg.lr
    if sched == "step":
        if cfg.step_size <= 0:
            raise ConfigError("optim.step_size must be positive for the step schedule")
        return max(cfg.lr * cfg.gamma ** (epoch // cfg.step_size), cfg.min_lr)
    if sched == "cosine":
        span = max(1, total_epochs - cfg.warmup_epochs)
        t = min(1.0, (epoch - cfg.warmup_epochs) / span)
        return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * t))
    raise ConfigError(f"optim.schedule: unknown schedule {cfg.schedule!r} (none, step, cosine)")


def set_lr(optimizer: torch.optim.Optimizer, lr: float, base_lr: float) -> None:
    """Scale every param group by lr/base_lr, so groups with their own lr keep their ratio."""
    for g in optimizer.param_groups:
        g.setdefault("initial_lr", g["lr"])
        g["lr"] = g["initial_lr"] * (lr / base_lr if base_lr else 1.0)

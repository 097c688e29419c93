"""Devices and autocast precision: one rule for training (the engine) and inference (``encode/``).

A leaf module (torch only), so inference does not import the trainer to find a device.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from bitseek.errors import BitseekError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")

__all__ = ["PRECISIONS", "resolve_device", "resolve_precision", "to_device"]


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``auto``: this rank's CUDA device, else MPS, else the CPU; anything else as torch spells it."""
    if isinstance(spec, torch.device):
        return spec
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cuda":  # the current CUDA device (this rank's under torchrun), with its index
        rank = os.environ.get("LOCAL_RANK")
        return torch.device("cuda", int(rank) if rank is not None else torch.cuda.current_device())
    return torch.device(spec)


def resolve_precision(spec: str, device: torch.device, key: str = "train.precision") -> torch.dtype | None:
    """The autocast dtype, or None for full fp32 (``auto``: bf16/fp16 on CUDA, fp32 elsewhere)."""
    if spec == "fp32" or (spec == "auto" and device.type != "cuda"):
        return None
    if spec == "bf16" or (spec == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    if spec in ("fp16", "auto"):
        return torch.float16
    raise BitseekError(f"{key}: unknown value {spec!r} ({', '.join(PRECISIONS)})")


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move a batch's tensors to ``device`` without blocking the host."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}

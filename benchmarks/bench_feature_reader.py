"""Training-epoch reads of an SSVH feature file, streamed from HDF5 against held in RAM (``data.ram_budget``).

What it answers: how many shuffled training epochs per second the feature reader serves each way,
on a synthetic SSVH-layout file (``feats``: videos x frames x dim float32) of a realistic shape
(default 2,000 x 25 x 4,096 = 0.82 GB, FCVID's frame shape). An epoch is one pass of a shuffled
``DataLoader`` over ``VideoFeatureDataset`` at the training batch size, exactly what the engine
iterates (no model). Measured each way:

* ``stream``: every batch reads its rows from the file (one HDF5 slice per contiguous run, about
  B per shuffled batch). The first epoch starts with the file dropped from the OS page cache
  (``posix_fadvise DONTNEED`` on this file only, after an ``fsync``) and is reported apart
  (``cold_epoch_s``); the rest read a file the kernel already caches, streaming's best case.
* ``ram``: ``H5Shards.hold_in_memory`` reads the file once in 64 MB slices (``load_s``, from a cold
  cache), then each batch indexes the array.

Before timing, one shuffled epoch is compared batch by batch: the two ways must return the same
bytes. The file is written to ``--path`` (default under /tmp) and kept for re-runs unless
``--remove``; a file of another shape is rewritten. Example::

    python benchmarks/bench_feature_reader.py                      # 2000 x 25 x 4096, batch 128
    python benchmarks/bench_feature_reader.py --n 500 --epochs 2   # quick
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader

from bitseek.atomic import atomic_open
from bitseek.data.h5features import H5Shards
from bitseek.data.video_features import VideoFeatureDataset
from bitseek.errors import InputError
from bitseek.utils.sizes import format_bytes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import read_previous, rss_mb, write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "feature_reader.json"
#: FCVID's training split, for scale: what the official loaders read into RAM before training
FCVID_TRAIN = (45_585, 25, 4096)


def write_synthetic(path: Path, n: int, frames: int, dim: int, seed: int = 0) -> float:
    """A (n, frames, dim) float32 ``feats`` file in the SSVH layout (contiguous), written in row blocks."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    step = max(1, (64 << 20) // (frames * dim * 4))
    with atomic_open(path, "w+b") as fh:
        with h5py.File(fh, "w") as f:
            ds = f.create_dataset("feats", (n, frames, dim), dtype="f4")
            for s in range(0, n, step):
                e = min(s + step, n)
                ds[s:e] = rng.standard_normal((e - s, frames, dim), dtype=np.float32)
            f.attrs["synthetic_seed"] = seed
        fh.flush()
        os.fsync(fh.fileno())
    return time.perf_counter() - t0


def existing_shape(path: Path) -> tuple[int, ...] | None:
    try:
        with h5py.File(path, "r") as f:
            return tuple(f["feats"].shape)
    except (OSError, KeyError):
        return None


def drop_from_page_cache(path: Path) -> bool:
    """Ask the kernel to forget this one file's cached pages (no effect on other files); False if unsupported."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def loader(src: H5Shards, batch: int, seed: int) -> DataLoader:
    """The engine's training loader: shuffled, batch ``batch``, a seeded generator, no workers."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    return DataLoader(VideoFeatureDataset(src), batch_size=batch, shuffle=True, generator=gen)


def run_epoch(src: H5Shards, batch: int, seed: int) -> tuple[float, int]:
    """Seconds for one shuffled epoch, and the rows it served (checked by the caller)."""
    t0 = time.perf_counter()
    rows = 0
    for b in loader(src, batch, seed):
        rows += int(b["feats"].shape[0])
    return time.perf_counter() - t0, rows


def check_equal(path: Path, batch: int) -> int:
    """One shuffled epoch both ways, batch by batch: the bytes must agree. Returns the batches compared."""
    streamed, held = H5Shards([path]), H5Shards([path])
    held.hold_in_memory()
    count = 0
    for a, b in zip(loader(streamed, batch, 1), loader(held, batch, 1)):
        if not (torch.equal(a["index"], b["index"]) and a["feats"].numpy().tobytes() == b["feats"].numpy().tobytes()):
            raise RuntimeError(f"batch {count}: streamed and in-RAM reads differ")
        count += 1
    streamed.close()
    return count


def timed_epochs(src: H5Shards, batch: int, epochs: int, n: int, first: Callable[[], None] | None = None
                 ) -> list[float]:
    times = []
    for e in range(epochs):
        if e == 0 and first is not None:
            first()
        sec, rows = run_epoch(src, batch, seed=100 + e)
        if rows != n:
            raise RuntimeError(f"epoch {e} served {rows} rows, expected {n}")
        times.append(sec)
    return times


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="videos in the synthetic file")
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=128, help="training batch size (the demo presets' 128)")
    ap.add_argument("--epochs", type=int, default=4, help="timed epochs each way (the first streamed one cold)")
    ap.add_argument("--path", type=Path, default=Path("/tmp/bitseek-bench/feature_reader.h5"))
    ap.add_argument("--remove", action="store_true", help="delete the synthetic file afterwards")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    for flag in ("n", "frames", "dim", "batch"):
        if getattr(args, flag) < 1:
            raise InputError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if args.epochs < 2:
        raise InputError(f"--epochs must be >= 2 (one cold streamed epoch plus warm ones), got {args.epochs}")
    torch.set_num_threads(1)
    shape = (args.n, args.frames, args.dim)
    load_start = os.getloadavg()
    args.path.parent.mkdir(parents=True, exist_ok=True)
    write_s = None
    if existing_shape(args.path) != shape:
        write_s = round(write_synthetic(args.path, *shape), 2)
    nbytes = int(np.prod(shape)) * 4
    batches_checked = check_equal(args.path, args.batch)

    stream = H5Shards([args.path])
    cold = drop_from_page_cache(args.path)
    stream_times = timed_epochs(stream, args.batch, args.epochs, args.n)
    stream.close()

    held = H5Shards([args.path])
    drop_from_page_cache(args.path)
    t0 = time.perf_counter()
    held.hold_in_memory()
    load_s = time.perf_counter() - t0
    ram_times = timed_epochs(held, args.batch, args.epochs, args.n)

    warm = stream_times[1:]
    result = {
        "file": {"path": str(args.path), "shape": list(shape), "bytes": nbytes, "size": format_bytes(nbytes),
                 "written_s": write_s},
        "batch": args.batch,
        "identical_batches_checked": batches_checked,
        "stream": {"cold_epoch_s": round(stream_times[0], 3), "cold_cache_dropped": cold,
                   "warm_epoch_s": [round(t, 3) for t in warm],
                   "epochs_per_s_warm": round(len(warm) / sum(warm), 3),
                   "epochs_per_s_cold": round(1 / stream_times[0], 3)},
        "ram": {"load_s": round(load_s, 3), "epoch_s": [round(t, 3) for t in ram_times],
                "epochs_per_s": round(len(ram_times) / sum(ram_times), 3)},
        "speedup_warm": round(sum(warm) / len(warm) / (sum(ram_times) / len(ram_times)), 2),
        "break_even_epochs_vs_warm": round(load_s / max(1e-9, sum(warm) / len(warm) - sum(ram_times) / len(ram_times)),
                                           2),
        "peak_rss_mb": round(rss_mb(), 1),
        "fcvid_train_bytes": int(np.prod(FCVID_TRAIN)) * 4,
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor(), "torch": torch.__version__,
                    "h5py": h5py.__version__, "threads": torch.get_num_threads(),
                    "load_avg_start": [round(x, 2) for x in load_start],
                    "load_avg_end": [round(x, 2) for x in os.getloadavg()]},
    }
    if args.remove:
        args.path.unlink()
    doc = read_previous(args.out)
    doc[f"{args.n}x{args.frames}x{args.dim}-b{args.batch}"] = result
    write_results(args.out, doc, result)
    return result


if __name__ == "__main__":
    main()

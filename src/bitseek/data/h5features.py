"""Lazy readers for the SSVH/BTH/ConMH frame-feature files: HDF5 datasets of shape (videos, frames, dim).

Why lazy: YFCC's nine training shards hold ~168 GB of float32, so nothing here ever loads a whole
file. Each read is an h5py slice of the rows asked for, and a list of shards is presented as one
array with a global row index.

Why handles are opened per process: an h5py file object must not cross a ``fork`` (DataLoader
workers). :class:`H5Shards` records the process id with its open handles and reopens them after a
fork or an unpickle, so the same object works with ``num_workers > 0`` under fork and spawn alike.

Cost model (documented because it decides training speed on real data): a read costs one HDF5
hyperslab request per *contiguous run* of rows. :meth:`H5Shards.read` sorts the requested rows
and reads each run with one slice, so sequential batches (encoding, evaluation) cost one request
per batch, while a shuffled training batch of B rows costs about B requests of ``frames × dim × 4``
bytes each (400 KB for FCVID). That is fine for contiguous (unchunked) files on local disk; for
chunked/compressed files prefer :class:`BlockShuffleSampler`, which keeps runs long.

Reading from RAM when it fits (``data.ram_budget``): a split whose float32 array fits the budget is
read once, in large contiguous chunks (:meth:`H5Shards.hold_in_memory`), and every later read
indexes that array, so a shuffled epoch costs memory copies instead of B HDF5 requests per batch.
The official ConMH/WSCH loaders always hold everything (FCVID's 45,585 x 25 x 4096 float32 training
array is 18.7 GB); here a split that does not fit streams as before. Either way ``read`` returns
the same bytes.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import h5py
import numpy as np
import torch
from torch.utils.data import Sampler

from bitseek.errors import FileFormatError, InputError
from bitseek.utils.sizes import format_bytes, parse_bytes

__all__ = ["ShardInfo", "H5Shards", "validate_features", "BlockShuffleSampler", "frame_positions",
           "RamBudget", "ram_budget", "check_ram_budget", "apply_ram_budget", "available_ram", "AUTO_RAM_FRACTION"]

log = logging.getLogger(__name__)

_CACHE_BYTES = 16 * 1024 * 1024  # h5py raw-chunk cache per open file (only matters for chunked files)
_LOAD_CHUNK_BYTES = 64 * 1024 * 1024  # one HDF5 slice per this many bytes when a split is read into RAM
#: ``data.ram_budget: auto`` allows this share of the RAM available when the data is opened
AUTO_RAM_FRACTION = 0.5


@dataclass(frozen=True)
class ShardInfo:
    """Shape facts of one feature file, read once at construction."""

    path: Path
    key: str
    rows: int
    frames: int
    dim: int
    dtype: str


def _open_h5(path: Path) -> h5py.File:
    """Open read-only, turning h5py's OSError (truncated, not HDF5, unreadable) into FileFormatError."""
    if not path.exists():
        raise FileFormatError(f"{path}: feature file does not exist")
    if path.is_dir():
        raise FileFormatError(f"{path}: is a directory, expected an HDF5 feature file")
    try:
        return h5py.File(path, "r", rdcc_nbytes=_CACHE_BYTES)
    except OSError as e:
        raise FileFormatError(f"{path}: cannot open as HDF5 (truncated or corrupt file?): {e}") from None


def _dataset(fh: h5py.File, path: Path, key: str) -> h5py.Dataset:
    try:
        present = key in fh
        if not present:
            keys = ", ".join(sorted(fh.keys())) or "none"
            raise FileFormatError(f"{path}: no dataset {key!r} (keys in file: {keys})")
        ds = fh[key]
    except FileFormatError:
        raise
    except (KeyError, OSError, RuntimeError, ValueError) as e:  # h5py's report of damaged object headers
        raise FileFormatError(f"{path}: cannot open dataset {key!r} (truncated or corrupt file?): {e}") from None
    if not isinstance(ds, h5py.Dataset):
        raise FileFormatError(f"{path}: {key!r} is a group, expected a (videos, frames, dim) dataset")
    return ds


def _check_storage(ds: h5py.Dataset, path: Path) -> None:
    """Catch a file cut short inside a contiguous dataset's data (HDF5 only checks its own EOF mark)."""
    if ds.chunks is not None:
        return  # chunked: a missing chunk raises at read time, which read() reports
    offset = ds.id.get_offset()
    if offset is None:  # never written: all fill value
        return
    need = offset + ds.id.get_storage_size()
    have = path.stat().st_size
    if need > have:
        raise FileFormatError(
            f"{path}: truncated file: dataset {ds.name!r} needs {need} bytes but the file has {have}"
        )


def probe_shard(path: str | os.PathLike[str], key: str) -> ShardInfo:
    """Open ``path``, check ``key`` is a float (videos, frames, dim) dataset and the file is whole."""
    p = Path(path)
    with _open_h5(p) as fh:
        ds = _dataset(fh, p, key)
        if ds.ndim != 3:
            raise FileFormatError(
                f"{p}: dataset {key!r} has shape {ds.shape}; expected rank 3 (videos, frames, dim)"
            )
        if ds.dtype.kind != "f":
            raise FileFormatError(f"{p}: dataset {key!r} has dtype {ds.dtype}; expected floating point features")
        if 0 in ds.shape[1:]:
            raise FileFormatError(f"{p}: dataset {key!r} has an empty axis, shape {ds.shape}")
        _check_storage(ds, p)
        n, t, d = (int(s) for s in ds.shape)
        return ShardInfo(p, key, n, t, d, str(ds.dtype))


def frame_positions(total: int, wanted: int) -> np.ndarray | None:
    """Evenly spaced frame indices when a file has more frames than wanted (None = take all)."""
    if wanted <= 0 or wanted == total:
        return None
    if wanted > total:
        raise InputError(f"asked for {wanted} frames per video but the file has only {total}")
    return np.round(np.linspace(0, total - 1, wanted)).astype(np.int64)


def _runs(sorted_rows: np.ndarray) -> list[tuple[int, int, int]]:
    """Split sorted unique row numbers into (start, stop, position-in-input) contiguous runs."""
    if sorted_rows.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [sorted_rows.size]])
    return [(int(sorted_rows[s]), int(sorted_rows[e - 1]) + 1, int(s)) for s, e in zip(starts, ends)]


class H5Shards:
    """One or more HDF5 feature files presented as a single (videos, frames, dim) float32 array.

    ``feature_dim`` (0 = any) and ``max_frames`` (0 = all; fewer than the file = evenly spaced
    subsample; more than the file = error) are checked against every shard up front.
    ``check_finite`` makes every read verify that no row holds NaN/inf and name the row if one does.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], key: str = "feats", feature_dim: int = 0,
                 max_frames: int = 0, check_finite: bool = True, limit: int = 0) -> None:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        if not paths:
            raise InputError("H5Shards: no feature files given")
        self.key = key
        self.check_finite = bool(check_finite)
        self.shards = [probe_shard(p, key) for p in paths]
        first = self.shards[0]
        for s in self.shards[1:]:
            if (s.frames, s.dim) != (first.frames, first.dim):
                raise FileFormatError(
                    f"{s.path}: shard has (frames, dim) = ({s.frames}, {s.dim}) but {first.path} has "
                    f"({first.frames}, {first.dim}); all shards of a split must agree"
                )
        if feature_dim and first.dim != feature_dim:
            raise FileFormatError(
                f"{first.path}: features are {first.dim}-d but the config says feature_dim={feature_dim}"
            )
        try:
            self._frame_idx = frame_positions(first.frames, max_frames)
        except InputError as e:
            raise FileFormatError(f"{first.path}: {e}") from None
        self.dim = first.dim
        self.file_frames = first.frames
        self.frames = first.frames if self._frame_idx is None else int(max_frames)
        self._offsets = np.cumsum([0] + [s.rows for s in self.shards]).astype(np.int64)
        if int(self._offsets[-1]) == 0:
            names = ", ".join(str(s.path) for s in self.shards)
            raise FileFormatError(f"{names}: holds 0 videos (dataset {key!r} has no rows); check the file")
        total = int(self._offsets[-1])
        self._len = total if limit <= 0 else min(total, int(limit))
        self._handles: dict[int, h5py.Dataset] = {}
        self._files: dict[int, h5py.File] = {}
        self._pid = os.getpid()
        self._memory: np.ndarray | None = None

    # ------------------------------------------------------------------ process-safe handles

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"], state["_files"] = {}, {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def _dataset(self, shard: int) -> h5py.Dataset:
        if self._pid != os.getpid():  # forked: the parent's handles belong to the parent
            self._handles, self._files, self._pid = {}, {}, os.getpid()
        ds = self._handles.get(shard)
        if ds is None:
            info = self.shards[shard]
            fh = _open_h5(info.path)
            self._files[shard] = fh
            ds = self._handles[shard] = _dataset(fh, info.path, info.key)
        return ds

    def close(self) -> None:
        """Close this process's open files (they reopen on the next read)."""
        if self._pid == os.getpid():
            for fh in self._files.values():
                fh.close()
        self._handles, self._files = {}, {}

    # ------------------------------------------------------------------ array-like view

    def __len__(self) -> int:
        return self._len

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self._len, self.frames, self.dim)

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self.shards]

    @property
    def nbytes(self) -> int:
        """Bytes of the float32 array :meth:`read` serves (what holding it in RAM costs)."""
        return self._len * self.frames * self.dim * 4

    @property
    def in_memory(self) -> bool:
        return self._memory is not None

    def hold_in_memory(self, chunk_bytes: int = _LOAD_CHUNK_BYTES) -> None:
        """Read every row once, one HDF5 slice per ``chunk_bytes``, and serve later reads from RAM.

        The chunks go through the streaming path's own per-shard read (frame subsampling, float32
        cast, NaN/inf check with the same error), straight into the one array, so the two ways
        cannot disagree. The files are closed afterwards; a forked worker shares the array.
        """
        if self._memory is not None:
            return
        mem = np.empty(self.shape, dtype=np.float32)
        row_bytes = max(1, self.frames * self.dim * 4)
        step = max(1, int(chunk_bytes) // row_bytes)
        for s in range(0, self._len, step):
            rows = np.arange(s, min(s + step, self._len), dtype=np.int64)
            shard_of, local = self.locate(rows)
            for shard in np.unique(shard_of):
                sel = np.flatnonzero(shard_of == shard)
                self._read_shard(int(shard), local[sel], mem, s + int(sel[0]))
        self.close()
        self._memory = mem

    def release_memory(self) -> None:
        """Stream again (drops the in-RAM array)."""
        self._memory = None

    def locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global row numbers -> (shard number, row within that shard)."""
        shard = np.searchsorted(self._offsets, rows, side="right") - 1
        return shard, rows - self._offsets[shard]

    def __getitem__(self, key: Any) -> np.ndarray:
        """``src[i]`` -> (frames, dim); ``src[a:b]`` / ``src[list]`` -> (n, frames, dim)."""
        if isinstance(key, slice):
            return self.read(np.arange(*key.indices(self._len)))
        if isinstance(key, (int, np.integer)):
            return self.read(np.asarray([int(key)]))[0]
        return self.read(np.asarray(key))

    def read(self, rows: Any) -> np.ndarray:
        """Rows in the order given, as float32 (n, frames, dim); one h5 slice per contiguous run."""
        idx = np.asarray(rows)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise InputError(f"row indices must be a 1-D integer array, got shape {idx.shape} dtype {idx.dtype}")
        idx = idx.astype(np.int64, copy=False)
        if idx.size and (idx.min() < -self._len or idx.max() >= self._len):
            raise InputError(f"row index out of range for {self._len} videos ({self.shards[0].path} …)")
        idx = np.where(idx < 0, idx + self._len, idx)
        if self._memory is not None:
            return self._memory[idx]  # a new C-contiguous float32 array, as below
        out = np.empty((idx.size, self.frames, self.dim), dtype=np.float32)
        if idx.size == 0:
            return out
        uniq, inverse = np.unique(idx, return_inverse=True)
        buf = np.empty((uniq.size, self.frames, self.dim), dtype=np.float32)
        shard_of, local = self.locate(uniq)
        for s in np.unique(shard_of):
            sel = np.flatnonzero(shard_of == s)
            self._read_shard(int(s), local[sel], buf, int(sel[0]))
        out[:] = buf[inverse]
        return out

    def _read_shard(self, shard: int, local: np.ndarray, buf: np.ndarray, at: int) -> None:
        ds = self._dataset(shard)
        path = self.shards[shard].path
        for start, stop, pos in _runs(local):
            try:
                block = ds[start:stop]
            except (OSError, ValueError, RuntimeError) as e:
                raise FileFormatError(f"{path}: failed to read rows {start}:{stop} of {self.key!r} "
                                      f"(corrupt or truncated file?): {e}") from None
            if self._frame_idx is not None:
                block = block[:, self._frame_idx]
            dst = buf[at + pos: at + pos + (stop - start)]
            dst[...] = block
            if self.check_finite:
                bad = ~np.isfinite(dst).all(axis=(1, 2))
                if bad.any():
                    rows = (np.flatnonzero(bad) + start).tolist()
                    raise FileFormatError(
                        f"{path}: dataset {self.key!r} has NaN/inf values in row(s) {rows[:10]}"
                        f"{' …' if len(rows) > 10 else ''} (run bitseek.data.h5features.validate_features "
                        "to list every bad row)"
                    )

    def iter_chunks(self, chunk: int = 1024) -> Iterator[tuple[int, np.ndarray]]:
        """Sequential (start, block) pairs covering every row; one read per block."""
        for s in range(0, self._len, chunk):
            yield s, self.read(np.arange(s, min(s + chunk, self._len)))


# --------------------------------------------------------------------------- the RAM budget


@dataclass(frozen=True)
class RamBudget:
    """A resolved ``data.ram_budget``: bytes allowed (0 = always stream) and, for ``auto``, where they came from."""

    bytes: int
    origin: str = ""  # e.g. "auto: 50% of 21.4 GB available"

    def describe(self) -> str:
        """``8.0 GB budget`` or ``10.7 GB budget (auto: 50% of 21.4 GB available)``, for the logged decision."""
        return f"{format_bytes(self.bytes)} budget" + (f" ({self.origin})" if self.origin else "")


def available_ram() -> int:
    """Bytes of RAM the system can give without swapping (psutil's ``available``; MemAvailable on Linux)."""
    try:
        import psutil
    except ImportError:  # psutil is optional: Linux's own figure, then the free pages
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return int(psutil.virtual_memory().available)


def check_ram_budget(value: str, where: str = "data.ram_budget") -> str:
    """Refuse a budget that cannot be read (at config time, before anything is opened); returns it."""
    if str(value).strip().lower() != "auto":
        parse_bytes(value, where)
    return value


def ram_budget(value: str, where: str = "data.ram_budget") -> RamBudget:
    """``"auto"`` (:data:`AUTO_RAM_FRACTION` of :func:`available_ram`), ``0`` (stream) or a size ("8GB").

    Under torchrun every process on a node holds its own copy and all of them measure the RAM at the
    same moment, so ``auto`` gives each an equal share (``LOCAL_WORLD_SIZE``) of the fraction.
    """
    if str(value).strip().lower() == "auto":
        avail = available_ram()
        procs = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
        share = f" / {procs} processes" if procs > 1 else ""
        return RamBudget(int(avail * AUTO_RAM_FRACTION / procs),
                         f"auto: {AUTO_RAM_FRACTION:.0%} of {format_bytes(avail)} available{share}")
    return RamBudget(parse_bytes(value, where))


def apply_ram_budget(source: H5Shards, budget: RamBudget, split: str) -> bool:
    """Hold ``source`` in RAM if its array fits ``budget``, else leave it streaming; logs the decision."""
    size = format_bytes(source.nbytes)
    if budget.bytes <= 0:
        log.info("split %s: %s, ram_budget 0 -> streams", split, size)
        return False
    if source.nbytes > budget.bytes:
        log.info("split %s: %s does not fit the %s -> streams", split, size, budget.describe())
        return False
    t0 = time.perf_counter()
    source.hold_in_memory()
    log.info("split %s: %s fits the %s -> held in RAM (read in %.1f s)", split, size, budget.describe(),
             time.perf_counter() - t0)
    return True


def validate_features(path: str | os.PathLike[str], key: str = "feats", chunk: int = 512,
                      feature_dim: int = 0, raise_on_error: bool = True) -> dict[str, Any]:
    """Scan a whole feature file in chunks for unreadable or non-finite rows.

    Returns a summary (rows, frames, dim, dtype, bad_rows, min, max, mean); with
    ``raise_on_error`` a bad row or an unreadable chunk raises FileFormatError naming them.
    Memory stays at one chunk of ``chunk × frames × dim`` values.
    """
    info = probe_shard(path, key)
    if feature_dim and info.dim != feature_dim:
        raise FileFormatError(f"{info.path}: features are {info.dim}-d, expected {feature_dim}")
    bad: list[int] = []
    lo, hi, total = math.inf, -math.inf, 0.0
    with _open_h5(info.path) as fh:
        ds = _dataset(fh, info.path, key)
        for s in range(0, info.rows, chunk):
            e = min(s + chunk, info.rows)
            try:
                block = np.asarray(ds[s:e], dtype=np.float64)
            except (OSError, ValueError, RuntimeError) as err:
                raise FileFormatError(f"{info.path}: rows {s}:{e} of {key!r} cannot be read: {err}") from None
            finite = np.isfinite(block)
            row_ok = finite.all(axis=(1, 2))
            bad.extend((np.flatnonzero(~row_ok) + s).tolist())
            vals = block[finite]
            if vals.size:
                lo, hi, total = min(lo, float(vals.min())), max(hi, float(vals.max())), total + float(vals.sum())
    n_values = info.rows * info.frames * info.dim
    report = {
        "path": str(info.path), "key": key, "rows": info.rows, "frames": info.frames, "dim": info.dim,
        "dtype": info.dtype, "bad_rows": bad, "min": lo, "max": hi,
        "mean": total / n_values if n_values else float("nan"),
    }
    if bad and raise_on_error:
        raise FileFormatError(
            f"{info.path}: {len(bad)} row(s) of {key!r} contain NaN/inf, first: {bad[:10]}"
        )
    return report


class BlockShuffleSampler(Sampler[int]):
    """Shuffle the order of contiguous blocks of rows, keep rows within a block in file order.

    A batch of B rows then needs about B / block reads instead of B, which matters for chunked or
    compressed HDF5 files. Trade-off: neighbours in the file share a batch more often than with a
    full shuffle; if a file is sorted by class this biases in-batch negatives of contrastive
    losses, so keep ``block`` well below the batch size and the batch size well above the class
    run length. ``set_epoch`` reseeds the order like ``DistributedSampler``.
    """

    def __init__(self, n: int, block: int = 16, seed: int = 0) -> None:
        if n < 0 or block < 1:
            raise InputError(f"BlockShuffleSampler: need n >= 0 and block >= 1, got n={n}, block={block}")
        self.n, self.block, self.seed, self.epoch = int(n), int(block), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        nblocks = -(-self.n // self.block)
        order = torch.randperm(nblocks, generator=g).numpy()
        starts = order * self.block
        rows = (starts[:, None] + np.arange(self.block)[None, :]).reshape(-1)
        yield from (int(r) for r in rows[rows < self.n])

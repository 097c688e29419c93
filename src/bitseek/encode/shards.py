"""Sharded encoding: shard ``i`` of ``n`` encodes one contiguous block of a split; the shards merge into one set.

Shards are contiguous blocks (``collective.contiguous_shard``) and carry the items' global positions as
ids, so the merged set equals the unsharded one row for row, id for id. Each shard records ``shard``
(``"i/n"``), the split's total size and what produced it; a merge refuses missing, repeated or foreign
shards by file name. The same job runs as ``torchrun`` ranks or a SLURM array (``--shard auto``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bitseek.codes import CodeSet, FeatureSet
from bitseek.collective import contiguous_shard
from bitseek.errors import InputError

__all__ = ["parse_shard", "shard_path", "shard_rows", "load_shards", "merge_shards", "SHARD_ATTRS"]

#: attributes that must agree between the shards of one set
SHARD_ATTRS = ("model", "dataset", "split", "precision", "shard_of", "items")

_SHARD = re.compile(r"^(\d+)/(\d+)$")


def parse_shard(text: str, flag: str = "--shard") -> tuple[int, int]:
    """``"i/n"`` (0-based) or ``"auto"``: torchrun's RANK/WORLD_SIZE, else a SLURM array's task id/count."""
    if text == "auto":
        env = os.environ
        if "WORLD_SIZE" in env and "RANK" in env:
            return _check(int(env["RANK"]), int(env["WORLD_SIZE"]), flag)
        if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
            first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
            return _check(int(env["SLURM_ARRAY_TASK_ID"]) - first, int(env["SLURM_ARRAY_TASK_COUNT"]), flag)
        raise InputError(f"{flag} auto: neither torchrun (RANK, WORLD_SIZE) nor a SLURM array "
                         "(SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT) is in the environment; give i/n")
    m = _SHARD.match(text.strip())
    if not m:
        raise InputError(f"{flag} {text!r}: expected i/n with 0 <= i < n (e.g. 0/4), or auto")
    return _check(int(m.group(1)), int(m.group(2)), flag)


def _check(i: int, n: int, flag: str) -> tuple[int, int]:
    if n < 1 or not 0 <= i < n:
        raise InputError(f"{flag} {i}/{n}: expected 0 <= i < n")
    return i, n


def shard_path(out: str | os.PathLike[str], i: int, n: int) -> Path:
    """``db.codes`` -> ``db.shard-00002-of-00008.codes`` (sorts in shard order)."""
    p = Path(out)
    return p.with_name(f"{p.stem}.shard-{i:05d}-of-{n:05d}{p.suffix}")


def shard_rows(n_items: int, i: int, n: int) -> range:
    """Positions of the split that shard ``i`` of ``n`` encodes."""
    return contiguous_shard(n_items, i, n)


def _load(path: str | os.PathLike[str]) -> CodeSet | FeatureSet:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such shard file")
    with p.open("rb") as fh:
        head = fh.read(16)
    if head.startswith(b"BITSEEK-CODESET"):
        return CodeSet.load(p)
    if head.startswith(b"BITSEEK-FEATSET"):
        return FeatureSet.load(p)
    raise InputError(f"{p}: not a bitseek code set or feature set (write shards with bitseek encode --shard)")


def load_shards(paths: Sequence[str | os.PathLike[str]]) -> list[CodeSet | FeatureSet]:
    """The shards in shard order, checked to be one complete set (all of 0..n-1 once, same producer)."""
    if not paths:
        raise InputError("no shard files given")
    sets = [_load(p) for p in paths]
    kinds = {type(s).__name__ for s in sets}
    if len(kinds) > 1:
        raise InputError(f"{paths[0]}: shards mix code sets and feature sets")
    if len(sets) == 1 and "shard" not in sets[0].attrs:
        return sets  # one unsharded file
    where: dict[int, str] = {}
    first = sets[0].attrs
    for path, s in zip(paths, sets):
        shard = s.attrs.get("shard")
        if not isinstance(shard, str) or not _SHARD.match(shard):
            raise InputError(f"{path}: not a shard (no 'shard' attribute); write shards with bitseek encode --shard")
        i, n = (int(x) for x in shard.split("/"))
        for key in SHARD_ATTRS:
            if s.attrs.get(key) != first.get(key):
                raise InputError(f"{path}: {key}={s.attrs.get(key)!r}, but {paths[0]} has {first.get(key)!r}; "
                                 "these shards are not of one encoding job")
        if i in where:
            raise InputError(f"{path}: shard {shard} given twice (also {where[i]})")
        where[i] = str(path)
    n = int(first["shard_of"])
    missing = sorted(set(range(n)) - set(where))
    if missing:
        raise InputError(f"{paths[0]}: shards {', '.join(f'{i}/{n}' for i in missing[:10])} are missing "
                         f"({len(where)} of {n} given)")
    order = sorted(range(len(sets)), key=lambda k: int(sets[k].attrs["shard"].split("/")[0]))
    out = [sets[k] for k in order]
    total = sum(len(s) for s in out)
    if total != int(first["items"]):
        raise InputError(f"{paths[0]}: the shards hold {total} items, the split has {first['items']}")
    return out


def _merged_attrs(first: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in first.items() if k not in ("shard", "shard_of")} | {"merged_from": int(first.get("shard_of", 1))}


def merge_shards(paths: Sequence[str | os.PathLike[str]]) -> CodeSet | FeatureSet:
    """One CodeSet or FeatureSet from a complete set of shards (rows and ids as one unsharded encode)."""
    sets = load_shards(paths)
    if len(sets) == 1 and "shard" not in sets[0].attrs:
        return sets[0]
    cols = set(sets[0].meta)
    if any(set(s.meta) != cols for s in sets):
        raise InputError(f"{paths[0]}: the shards have different metadata columns")
    meta = {k: [v for s in sets for v in s.meta[k]] for k in sorted(cols)}
    attrs = _merged_attrs(sets[0].attrs)
    ids = np.concatenate([s.ids for s in sets])
    if isinstance(sets[0], CodeSet):
        css: list[CodeSet] = sets  # type: ignore[assignment]
        if len({c.bits for c in css}) > 1:
            raise InputError(f"{paths[0]}: the shards hold codes of different lengths")
        zeros = None
        if any(c.zeros is not None for c in css):
            zeros = np.concatenate([c.zeros if c.zeros is not None else np.zeros_like(c.codes) for c in css])
        return CodeSet(np.concatenate([c.codes for c in css]), ids, css[0].bits, meta=meta, attrs=attrs, zeros=zeros)
    fss: list[FeatureSet] = sets  # type: ignore[assignment]
    if len({f.dim for f in fss}) > 1:
        raise InputError(f"{paths[0]}: the shards hold features of different dimensions")
    dtype = fss[0].dtype
    return FeatureSet(np.concatenate([np.asarray(f.features) for f in fss]), ids, meta=meta, attrs=attrs,
                      dtype=dtype)

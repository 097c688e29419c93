"""Shard names, the shard flag (i/n, torchrun, SLURM array) and merging shards back into one set."""

from __future__ import annotations

import numpy as np
import pytest

from bitseek.codes import CodeSet, FeatureSet
from bitseek.encode.shards import load_shards, merge_shards, parse_shard, shard_path, shard_rows
from bitseek.errors import InputError


def test_parse_shard_forms(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"):
        monkeypatch.delenv(var, raising=False)
    assert parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "-1/3", "1/0", "a/b", "3"):
        with pytest.raises(InputError, match="--shard"):
            parse_shard(bad)
    with pytest.raises(InputError, match="auto"):
        parse_shard("auto")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    assert parse_shard("auto") == (2, 4)  # --array=5-8: task 7 is the third shard
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "1")
    assert parse_shard("auto") == (1, 3)  # torchrun wins


def test_shard_paths_sort_and_rows_cover_the_split():
    names = [shard_path("out/db.codes", i, 12).name for i in range(12)]
    assert names == sorted(names) and names[3] == "db.shard-00003-of-00012.codes"
    rows = [list(shard_rows(10, i, 3)) for i in range(3)]
    assert sum(rows, []) == list(range(10))


def _shards(tmp_path, kind="codes", n=3, items=10):
    rng = np.random.default_rng(0)
    full = rng.choice([-1.0, 1.0], size=(items, 16)) if kind == "codes" else rng.standard_normal((items, 8))
    paths = []
    for i in range(n):
        r = shard_rows(items, i, n)
        attrs = {"model": "m", "dataset": "d", "split": "database", "precision": "fp32", "shard": f"{i}/{n}",
                 "shard_of": n, "items": items}
        ids = np.arange(r.start, r.stop)
        meta = {"path": [f"v{j}" for j in r]}
        p = shard_path(tmp_path / f"db.{kind}", i, n)
        if kind == "codes":
            CodeSet.from_signed(full[r.start:r.stop], ids=ids, attrs=attrs, meta=meta).save(p)
        else:
            FeatureSet(full[r.start:r.stop], ids=ids, attrs=attrs, meta=meta, dtype="float32").save(p)
        paths.append(p)
    return full, paths


@pytest.mark.parametrize("kind", ["codes", "feats"])
def test_merge_equals_the_unsharded_set(tmp_path, kind):
    full, paths = _shards(tmp_path, kind)
    merged = merge_shards(list(reversed(paths)))  # any order
    assert merged.ids.tolist() == list(range(10))
    assert merged.meta["path"] == [f"v{j}" for j in range(10)]
    assert merged.attrs["merged_from"] == 3 and "shard" not in merged.attrs
    if kind == "codes":
        np.testing.assert_array_equal(merged.signed(), full)
    else:
        np.testing.assert_array_equal(merged.float32(), full.astype(np.float32))


def test_merge_refuses_incomplete_repeated_or_foreign_shards(tmp_path):
    _, paths = _shards(tmp_path)
    with pytest.raises(InputError, match="missing"):
        load_shards(paths[:2])
    with pytest.raises(InputError, match="given twice"):
        load_shards([paths[0], paths[0], paths[1], paths[2]])
    other = tmp_path / "other"
    other.mkdir()
    _, foreign = _shards(other, n=3, items=11)
    with pytest.raises(InputError, match="not of one encoding job"):
        load_shards([paths[0], paths[1], foreign[2]])
    plain = tmp_path / "plain.codes"
    CodeSet.from_signed(np.ones((2, 16))).save(plain)
    with pytest.raises(InputError, match="not a shard"):
        load_shards([paths[0], plain])

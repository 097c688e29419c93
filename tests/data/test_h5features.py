"""Lazy HDF5 frame-feature reading: shards, ordering, process safety and every kind of bad file."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from bitseek.data.h5features import BlockShuffleSampler, H5Shards, _runs, frame_positions, validate_features
from bitseek.data.video_features import VideoFeatureDataset
from bitseek.errors import FileFormatError, InputError


def write_feats(path: Path, arr: np.ndarray, key: str = "feats", chunks: tuple | None = None) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=arr, chunks=chunks)
    return path


def feats(n: int, t: int = 4, d: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, t, d)).astype(np.float32)


@pytest.fixture()
def two_shards(tmp_path):
    a, b = feats(5, seed=1), feats(7, seed=2)
    paths = [write_feats(tmp_path / "s1.h5", a), write_feats(tmp_path / "s2.h5", b, chunks=(2, 4, 6))]
    return paths, np.concatenate([a, b])


def test_shards_are_one_array_with_a_global_index(two_shards):
    paths, ref = two_shards
    src = H5Shards(paths)
    assert len(src) == 12 and src.shape == (12, 4, 6)
    order = np.array([11, 0, 4, 5, 5, 3, 10, 6, -1])
    np.testing.assert_array_equal(src.read(order), ref[order])
    np.testing.assert_array_equal(src[2:9], ref[2:9])
    np.testing.assert_array_equal(src[7], ref[7])
    assert src.read([]).shape == (0, 4, 6)
    with pytest.raises(InputError, match="out of range"):
        src.read([12])


def test_runs_split_sorted_rows_into_contiguous_slices():
    assert _runs(np.array([3, 4, 5, 9, 10, 20])) == [(3, 6, 0), (9, 11, 3), (20, 21, 5)]
    assert _runs(np.array([], dtype=np.int64)) == []


def test_limit_and_frame_subsampling(tmp_path):
    arr = feats(6, t=10)
    p = write_feats(tmp_path / "f.h5", arr)
    src = H5Shards([p], max_frames=4, limit=3)
    assert src.shape == (3, 4, 6)
    np.testing.assert_array_equal(src.read([1]), arr[1:2, [0, 3, 6, 9]])
    assert frame_positions(10, 10) is None and frame_positions(10, 0) is None
    with pytest.raises(FileFormatError, match="only 10"):
        H5Shards([p], max_frames=12)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda d: d / "missing.h5", "does not exist"),
        (lambda d: d, "is a directory"),
        (lambda d: write_feats(d / "k.h5", feats(3), key="x"), r"no dataset 'feats' \(keys in file: x\)"),
        (lambda d: write_feats(d / "r.h5", feats(3)[:, 0]), "rank 3"),
        (lambda d: write_feats(d / "i.h5", np.ones((3, 4, 6), np.int32)), "floating point"),
    ],
)
def test_bad_files_name_the_file_and_the_problem(tmp_path, make, match):
    path = make(tmp_path)
    with pytest.raises(FileFormatError, match=match) as e:
        H5Shards([path])
    assert str(path) in str(e.value)


def test_dimension_checks(tmp_path):
    p6 = write_feats(tmp_path / "a.h5", feats(3, d=6))
    p8 = write_feats(tmp_path / "b.h5", feats(3, d=8))
    with pytest.raises(FileFormatError, match="feature_dim=8"):
        H5Shards([p6], feature_dim=8)
    with pytest.raises(FileFormatError, match="all shards of a split must agree"):
        H5Shards([p6, p8])


def test_truncated_and_garbage_files(tmp_path):
    good = write_feats(tmp_path / "t.h5", feats(50, t=5, d=40))
    raw = good.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FileFormatError, match="truncated"):
        H5Shards([cut])
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an hdf5 file at all" * 10)
    with pytest.raises(FileFormatError, match="cannot open as HDF5"):
        H5Shards([junk])


def test_non_finite_rows_are_caught_on_read_and_by_validate(tmp_path):
    arr = feats(8)
    arr[5, 2, 1] = np.nan
    arr[6, 0, 0] = np.inf
    p = write_feats(tmp_path / "nan.h5", arr)
    src = H5Shards([p])
    np.testing.assert_array_equal(src.read([0, 1, 2]), arr[:3])  # clean rows read fine
    with pytest.raises(FileFormatError, match=r"nan\.h5.*row\(s\) \[5, 6\]"):
        src.read([4, 5, 6])
    assert np.isnan(H5Shards([p], check_finite=False).read([5])).any()
    with pytest.raises(FileFormatError, match="2 row"):
        validate_features(p, chunk=3)
    rep = validate_features(p, chunk=3, raise_on_error=False)
    assert rep["bad_rows"] == [5, 6] and rep["rows"] == 8 and rep["dim"] == 6
    clean = validate_features(write_feats(tmp_path / "ok.h5", feats(4)), chunk=3)
    assert clean["bad_rows"] == [] and clean["min"] <= clean["mean"] <= clean["max"]


def test_handles_survive_pickling_and_fork(two_shards):
    paths, ref = two_shards
    src = H5Shards(paths)
    src.read([0, 11])  # opens handles in this process first
    clone = pickle.loads(pickle.dumps(src))
    assert clone._handles == {}
    np.testing.assert_array_equal(clone.read([3, 8]), ref[[3, 8]])
    ds = VideoFeatureDataset(src)
    loader = DataLoader(ds, batch_size=4, shuffle=False, num_workers=2, multiprocessing_context="fork")
    got = torch.cat([b["feats"] for b in loader]).numpy()
    np.testing.assert_array_equal(got, ref)
    src.close()


def test_dataset_batch_path_matches_item_path(two_shards):
    paths, ref = two_shards
    ds = VideoFeatureDataset(H5Shards(paths))
    idx = [9, 2, 3, 4, 11]
    batch = ds.__getitems__(idx)
    for i, item in zip(idx, batch):
        single = ds[i]
        assert item["index"] == single["index"] == i
        assert item["feats"].dtype == torch.float32
        torch.testing.assert_close(item["feats"], single["feats"])
        np.testing.assert_array_equal(item["feats"].numpy(), ref[i])


def test_block_shuffle_sampler():
    s = BlockShuffleSampler(23, block=5, seed=3)
    order = list(s)
    assert sorted(order) == list(range(23)) and len(s) == 23
    nxt = dict(zip(order[:-1], order[1:]))
    # inside a block rows follow file order; blocks start at multiples of the block size
    assert all(nxt[x] == x + 1 for x in order[:-1] if x % 5 != 4 and x != 22)
    assert order[0] % 5 == 0
    assert list(BlockShuffleSampler(23, block=5, seed=3)) == order
    s.set_epoch(1)
    assert list(s) != order and sorted(s) == list(range(23))
    with pytest.raises(InputError):
        BlockShuffleSampler(5, block=0)


def test_damaged_object_header_is_a_file_format_error(tmp_path, monkeypatch):
    """h5py reports some damage (a file cut with its EOF field patched) as KeyError from ``fh[key]``."""
    from bitseek.data.h5features import probe_shard

    p = tmp_path / "f.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("feats", data=np.zeros((2, 3, 4), np.float32))

    def broken(self, name):
        raise KeyError("Unable to synchronously open object (invalid dataset size, likely file corruption)")

    monkeypatch.setattr(h5py.File, "__getitem__", broken)
    with pytest.raises(FileFormatError, match=r"f\.h5: cannot open dataset 'feats' \(truncated or corrupt"):
        probe_shard(p, "feats")


def test_zero_video_file_is_refused(tmp_path):
    p = tmp_path / "z.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("feats", shape=(0, 3, 4), dtype=np.float32)
    with pytest.raises(FileFormatError, match=r"z\.h5: holds 0 videos"):
        H5Shards([p])


# --------------------------------------------------------------------------- the RAM budget


def test_held_in_memory_reads_the_same_bytes(two_shards):
    paths, ref = two_shards
    streamed, held = H5Shards(paths), H5Shards(paths)
    held.hold_in_memory(chunk_bytes=3 * 4 * 6 * 4)  # three rows per chunk: chunks cross the shard boundary
    assert held.in_memory and not streamed.in_memory and held.nbytes == ref.nbytes
    rng = np.random.default_rng(0)
    for order in (np.array([11, 0, 4, 5, 5, 3, 10, 6, -1]), rng.permutation(12), np.arange(12), np.array([], int)):
        a, b = streamed.read(order), held.read(order)
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape and b.flags.c_contiguous
        assert a.tobytes() == b.tobytes()
    assert held[2:9].tobytes() == streamed[2:9].tobytes() and held[7].tobytes() == streamed[7].tobytes()
    with pytest.raises(InputError, match="out of range"):
        held.read([12])
    out = held.read([1])
    out[...] = 0  # the caller's copy, not the held array
    np.testing.assert_array_equal(held.read([1]), ref[[1]])


def test_holding_reads_each_row_once_in_large_chunks(two_shards, monkeypatch):
    paths, ref = two_shards
    src = H5Shards(paths)
    calls: list[tuple[int, int]] = []
    real = H5Shards._read_shard

    def counting(self, shard, local, buf, at):
        calls.append((shard, len(local)))
        return real(self, shard, local, buf, at)

    monkeypatch.setattr(H5Shards, "_read_shard", counting)
    src.hold_in_memory()
    assert calls == [(0, 5), (1, 7)]  # one read per shard for a split smaller than a chunk
    assert src._files == {}  # the files are closed once the array is held
    calls.clear()
    np.testing.assert_array_equal(src.read([11, 0, 6]), ref[[11, 0, 6]])
    assert calls == []  # batches index the array: no HDF5 read
    src.release_memory()
    src.read([3])
    assert calls == [(0, 1)]


def test_held_in_memory_subsamples_limits_and_checks_like_streaming(tmp_path):
    arr = feats(6, t=10)
    p = write_feats(tmp_path / "f.h5", arr)
    src = H5Shards([p], max_frames=4, limit=3)
    src.hold_in_memory()
    assert src.read(np.arange(3)).tobytes() == arr[:3, [0, 3, 6, 9]].tobytes()
    bad = arr.copy()
    bad[4, 1, 2] = np.nan
    q = write_feats(tmp_path / "nan.h5", bad)
    with pytest.raises(FileFormatError, match=r"nan\.h5.*row\(s\) \[4\]"):
        H5Shards([q]).hold_in_memory()


def test_held_array_survives_pickling_and_fork(two_shards):
    paths, ref = two_shards
    src = H5Shards(paths)
    src.hold_in_memory()
    clone = pickle.loads(pickle.dumps(src))
    assert clone.in_memory
    np.testing.assert_array_equal(clone.read([3, 8]), ref[[3, 8]])
    loader = DataLoader(VideoFeatureDataset(src), batch_size=4, num_workers=2, multiprocessing_context="fork")
    np.testing.assert_array_equal(torch.cat([b["feats"] for b in loader]).numpy(), ref)


def test_the_budget_decides_and_logs(two_shards, caplog, monkeypatch):
    from bitseek.data import h5features as h5
    from bitseek.errors import ConfigError

    paths, _ = two_shards
    size = H5Shards(paths).nbytes  # 12 x 4 x 6 float32 = 1152 bytes
    caplog.set_level("INFO", logger="bitseek.data.h5features")
    src = H5Shards(paths)
    assert h5.apply_ram_budget(src, h5.ram_budget(str(size)), "train") and src.in_memory
    assert "split train: 1.2 kB fits the 1.2 kB budget -> held in RAM" in caplog.text
    src = H5Shards(paths)
    assert not h5.apply_ram_budget(src, h5.ram_budget(str(size - 1)), "train") and not src.in_memory
    assert "split train: 1.2 kB does not fit the 1.2 kB budget -> streams" in caplog.text
    assert not h5.apply_ram_budget(src, h5.ram_budget("0"), "train") and not src.in_memory
    assert "ram_budget 0 -> streams" in caplog.text
    assert h5.available_ram() > 0
    monkeypatch.setattr(h5, "available_ram", lambda: 2 * size)
    auto = h5.ram_budget("auto")
    assert auto.bytes == int(2 * size * h5.AUTO_RAM_FRACTION)
    assert h5.apply_ram_budget(H5Shards(paths), auto, "train")
    assert "fits the 1.2 kB budget (auto: 50% of 2.3 kB available) -> held in RAM" in caplog.text
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two torchrun processes on the node: half each
    assert h5.ram_budget("auto").bytes == int(2 * size * h5.AUTO_RAM_FRACTION / 2)
    monkeypatch.setattr(h5, "available_ram", lambda: size)
    assert not h5.apply_ram_budget(H5Shards(paths), h5.ram_budget("AUTO"), "train")
    with pytest.raises(ConfigError, match=r"^data\.ram_budget: cannot read '8XB'"):
        h5.check_ram_budget("8XB")

"""One-file persistence: round trips, damage detection, crash safety."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

import bitseek.atomic
import bitseek.index.persist as persist
from bitseek.codes import CodeSet
from bitseek.errors import FileFormatError
from bitseek.index import BinaryFlatIndex, Index, load_index, make_index

SPECS = ["flat", "ivf8,nprobe=3", "mih4,nflip=2", "hnsw8,ef_search=20", "float-ip"]


def _filled(spec: str) -> tuple[Index, np.ndarray]:
    rng = np.random.default_rng(0)
    if spec == "float-ip":
        index = make_index(spec, dim=6)
        data = rng.standard_normal((300, 6)).astype(np.float32)
    else:
        index = make_index(spec, bits=32)
        data = rng.integers(0, 256, (300, 4), dtype=np.uint8)
        index.train(data)
    index.add(data, rng.permutation(1000)[:300])
    index.remove(index.ids[::7])
    return index, data[:20]


@pytest.mark.parametrize("spec", SPECS)
def test_round_trip_keeps_results_ids_and_options(tmp_path, spec):
    index, q = _filled(spec)
    path = tmp_path / "a.bsi"
    index.save(path)
    back = load_index(path)
    assert type(back) is type(index) and back.spec == index.spec and len(back) == len(index)
    np.testing.assert_array_equal(back.ids, index.ids)
    for got, want in zip(back.search(q, 15), index.search(q, 15)):
        np.testing.assert_array_equal(got, want)
    radius = 0.5 if spec == "float-ip" else 10
    for (a, b), (c, d) in zip(back.range_search(q, radius), index.range_search(q, radius)):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    # automatic ids continue where the saved index left off
    extra = q[:2]
    assert back.add(extra).tolist() == index.add(extra).tolist()


def test_typed_load_and_empty_index(tmp_path):
    path = tmp_path / "empty.bsi"
    make_index("flat", bits=16).save(path)
    back = BinaryFlatIndex.load(path)
    assert len(back) == 0 and back.bits == 16
    ivf = make_index("ivf4", bits=16)
    ivf.save(tmp_path / "ivf.bsi")
    assert not load_index(tmp_path / "ivf.bsi").is_trained
    with pytest.raises(FileFormatError, match=r"ivf.bsi: holds a 'ivf' index, not a BinaryFlatIndex"):
        BinaryFlatIndex.load(tmp_path / "ivf.bsi")


@pytest.fixture()
def saved(tmp_path) -> tuple[Path, bytes]:
    index, _ = _filled("flat")
    path = tmp_path / "index.bsi"
    index.save(path)
    return path, path.read_bytes()


def _damaged(path: Path, raw: bytes) -> Path:
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda r: r[:-1], "checksum mismatch"),
        (lambda r: r[: len(r) // 2], "checksum mismatch|truncated"),
        (lambda r: r[:10], "truncated"),
        (lambda r: b"", "truncated"),
        (lambda r: r[:40] + bytes([r[40] ^ 0x01]) + r[41:], "checksum mismatch"),  # in the header
        (lambda r: r[:-100] + bytes([r[-100] ^ 0x80]) + r[-99:], "checksum mismatch"),  # in the payload
        (lambda r: r[:-1] + bytes([r[-1] ^ 0xFF]), "checksum mismatch"),  # in the digest itself
        (lambda r: b"NOT-AN-INDEX-XXX" + r[16:], "bad magic"),
        (lambda r: r[:16] + struct.pack("<I", 2) + r[20:], "unsupported index format version 2"),
    ],
)
def test_damaged_files_raise_file_format_error_naming_the_file(saved, damage, message):
    path, raw = saved
    with pytest.raises(FileFormatError, match=message) as err:
        load_index(_damaged(path, damage(raw)))
    assert str(path) in str(err.value)


def test_other_files_are_rejected(tmp_path):
    with pytest.raises(FileFormatError, match="no such index file"):
        load_index(tmp_path / "missing.bsi")
    CodeSet.from_signed(np.ones((3, 8))).save(tmp_path / "codes.bin")
    with pytest.raises(FileFormatError, match="bad magic"):
        load_index(tmp_path / "codes.bin")
    with pytest.raises(FileFormatError, match="no such index file"):
        load_index(tmp_path)  # a folder


def test_checksummed_but_inconsistent_files_are_rejected(tmp_path, saved):
    # a file written by a buggy tool: valid digest, contradicting contents
    path, _ = saved
    index = load_index(path)
    good = {"backend": "flat", "spec": "flat", "metric": "hamming", "dim": 32, "params": {}, "options": {},
            "n_slots": len(index), "n_alive": len(index), "next_auto_id": 10_000}
    ids = index.ids.astype("<i8")
    cases = [
        ({**good, "backend": "annoy"}, [("faiss", index._serialize()), ("ids", ids)], "unknown index engine 'annoy'"),
        ({**good, "n_slots": len(index) + 1}, [("faiss", index._serialize()), ("ids", ids)], "ids section"),
        ({**good, "dim": 64}, [("faiss", index._serialize()), ("ids", ids)], "64"),
        ({**good, "n_alive": 3}, [("faiss", index._serialize()), ("ids", ids)], "live ids"),
        ({**good, "n_alive": len(index) - 1}, [("faiss", index._serialize()), ("ids", np.r_[-1, ids[1:]])], "deletes rows"),
        (good, [("faiss", index._serialize()), ("ids", np.zeros_like(ids))], "duplicates"),
        (good, [("faiss", np.frombuffer(b"garbage!" * 4, np.uint8)), ("ids", ids)], "damaged or crafted"),
        (good, [("ids", ids)], "expected sections"),
        ({k: v for k, v in good.items() if k != "dim"}, [("faiss", index._serialize()), ("ids", ids)], "corrupt index header"),
    ]
    for header, sections, message in cases:
        persist.write_index_file(tmp_path / "bad.bsi", header, sections)
        with pytest.raises(FileFormatError, match=message):
            load_index(tmp_path / "bad.bsi")


def _listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_crash_during_fsync_keeps_old_file(saved, monkeypatch):
    path, raw = saved
    index, _ = _filled("flat")
    index.remove(index.ids[:10])

    def boom(fd):
        raise OSError("disk on fire")

    monkeypatch.setattr(bitseek.atomic.os, "fsync", boom)
    with pytest.raises(OSError, match="disk on fire"):
        index.save(path)
    assert path.read_bytes() == raw and _listing(path.parent) == [path.name]


def test_crash_mid_write_keeps_old_file(saved, monkeypatch):
    path, raw = saved
    real_open = persist.atomic_open

    class Dying:
        def __init__(self, fh):
            self.fh, self.writes = fh, 0

        def write(self, chunk):
            self.writes += 1
            if self.writes == 3:  # prefix and header written, payload half-way
                self.fh.write(bytes(chunk)[:5])
                raise KeyboardInterrupt("killed mid-save")
            return self.fh.write(chunk)

    class DyingOpen:
        def __init__(self, p, mode):
            self.ctx = real_open(p, mode)

        def __enter__(self):
            return Dying(self.ctx.__enter__())

        def __exit__(self, *exc):
            return self.ctx.__exit__(*exc)

    monkeypatch.setattr(persist, "atomic_open", DyingOpen)
    index, _ = _filled("mih4")
    with pytest.raises(KeyboardInterrupt):
        index.save(path)
    assert path.read_bytes() == raw and _listing(path.parent) == [path.name]
    with pytest.raises(KeyboardInterrupt):  # no old file: nothing is left behind either
        index.save(path.parent / "new.bsi")
    assert _listing(path.parent) == [path.name]
    assert len(load_index(path)) > 0

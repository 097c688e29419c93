from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from bitseek.codes import FeatureSet
from bitseek.codes import featureset as fsmod
from bitseek.errors import FileFormatError, InputError


def _rows(n=40, d=24, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_roundtrip_exact_in_the_stored_dtype(tmp_path, dtype):
    x = _rows()
    fs = FeatureSet(x, ids=np.arange(1000, 1040), meta={"path": [f"im{i}.jpg" for i in range(40)]},
                    attrs={"model": "cvnet"})
    fs.save(tmp_path / "f.feats", dtype=dtype)
    back = FeatureSet.load(tmp_path / "f.feats")
    assert back.dtype == dtype and back.memory_mapped and len(back) == 40 and back.dim == 24
    np.testing.assert_array_equal(np.asarray(back.features), x.astype(dtype))
    np.testing.assert_array_equal(back.ids, np.arange(1000, 1040))
    assert back.meta == fs.meta and back.attrs == {"model": "cvnet"}
    assert back.float32(slice(2, 5)).dtype == np.float32
    # rows start 64-byte aligned, so the mapping is a plain aligned view
    assert back._rows_offset % 64 == 0


def test_accepts_torch_and_refuses_bad_rows_and_ids():
    fs = FeatureSet(torch.ones(3, 4, dtype=torch.float64))
    assert fs.dtype == "float32" and fs.ids.tolist() == [0, 1, 2]
    with pytest.raises(InputError, match="2-D"):
        FeatureSet(np.ones(4))
    with pytest.raises(InputError, match="NaN or inf"):
        FeatureSet(np.array([[np.nan, 1.0]]))
    with pytest.raises(InputError, match="float16's range"):
        FeatureSet(np.array([[1e6, 1.0]]), dtype="float16")
    with pytest.raises(InputError, match=">= 0"):
        FeatureSet(np.ones((2, 2)), ids=[0, -1])
    with pytest.raises(InputError, match="unique"):
        FeatureSet(np.ones((2, 2)), ids=[3, 3])
    with pytest.raises(InputError, match="meta column"):
        FeatureSet(np.ones((2, 2)), meta={"path": ["a"]})


def test_open_does_not_read_the_rows_and_verify_catches_a_flipped_row_byte(tmp_path):
    fs = FeatureSet(_rows(200, 32))
    path = fs.save(tmp_path / "f.feats")
    good = FeatureSet.open(path)
    raw = bytearray(path.read_bytes())
    raw[good._rows_offset + 100] ^= 0x40  # inside the rows
    path.write_bytes(bytes(raw))
    opened = FeatureSet.open(path)  # the rows are neither read nor hashed on open
    assert isinstance(opened.features, np.memmap)
    with pytest.raises(FileFormatError, match="rows checksum mismatch"):
        opened.verify()
    with pytest.raises(FileFormatError, match="rows checksum mismatch"):
        FeatureSet.load(path)


def _bytes_read() -> int:
    """Bytes this process has read through read(2) so far (Linux /proc accounting)."""
    for line in open("/proc/self/io"):
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/io"), reason="needs Linux /proc/self/io")
def test_a_1m_by_2048_database_opens_without_reading_it(tmp_path):
    n, d = 1_000_000, 2048
    path = tmp_path / "r1m.feats"
    ids = np.arange(n, dtype="<i8")
    header = {"version": 1, "n": n, "dim": d, "dtype": "float16", "meta": {}, "attrs": {},
              "ids_sha256": __import__("hashlib").sha256(ids.tobytes()).hexdigest(), "rows_sha256": "0" * 64}
    hb = json.dumps(header).encode()
    pad = (-(16 + 8 + len(hb))) % 64
    rows_bytes = n * d * 2
    with path.open("wb") as fh:  # a sparse 4 GB file: the rows are a hole on disk
        fh.write(fsmod._MAGIC + struct.pack("<Q", len(hb) + pad) + hb + b" " * pad)
        fh.seek(16 + 8 + len(hb) + pad + rows_bytes)
        fh.write(ids.tobytes())
    before = _bytes_read()
    fs = FeatureSet.open(path)
    read = _bytes_read() - before
    assert fs.features.shape == (n, d) and isinstance(fs.features, np.memmap)
    # header + 8 MB of ids, not the 4 GB of rows
    assert read < 32 << 20, f"opening read {read / 2**20:.0f} MB: the rows were read"
    assert fs.float32(slice(999_998, 1_000_000)).shape == (2, d)  # only touched rows are read


def test_damaged_files_are_clear_errors(tmp_path):
    path = FeatureSet(_rows()).save(tmp_path / "f.feats")
    data = path.read_bytes()
    bad = tmp_path / "bad.feats"
    bad.write_bytes(data[:-9])
    with pytest.raises(FileFormatError, match="truncated"):
        FeatureSet.open(bad)
    raw = bytearray(data)
    raw[-3] ^= 0xFF  # inside the ids
    bad.write_bytes(bytes(raw))
    with pytest.raises(FileFormatError, match="ids checksum"):
        FeatureSet.open(bad)
    bad.write_bytes(b"not a feature file at all")
    with pytest.raises(FileFormatError, match="bad magic"):
        FeatureSet.open(bad)
    with pytest.raises(FileFormatError, match="no such"):
        FeatureSet.open(tmp_path / "missing.feats")
    from bitseek.codes import CodeSet

    CodeSet.from_signed(np.ones((2, 8))).save(tmp_path / "c.codes")
    with pytest.raises(FileFormatError, match="this is a CodeSet"):
        FeatureSet.open(tmp_path / "c.codes")


def test_save_is_atomic_and_leaves_no_temporary(tmp_path):
    path = FeatureSet(_rows()).save(tmp_path / "f.feats")
    before = path.read_bytes()
    with pytest.raises(InputError):
        FeatureSet(_rows()).save(tmp_path / "f.feats", dtype="int8")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.feats"]

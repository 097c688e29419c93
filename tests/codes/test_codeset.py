from __future__ import annotations

import numpy as np
import pytest

from bitseek.codes import CodeSet, binarize
from bitseek.errors import FileFormatError, InputError


def test_codeset_roundtrip_and_corruption(tmp_path):
    rng = np.random.default_rng(0)
    cs = CodeSet.from_signed(binarize(rng.standard_normal((50, 32))), ids=np.arange(100, 150),
                             meta={"path": [f"v{i}.mp4" for i in range(50)]}, attrs={"model": "conmh"})
    path = tmp_path / "codes.bsc"
    cs.save(path)
    back = CodeSet.load(path)
    np.testing.assert_array_equal(back.codes, cs.codes)
    np.testing.assert_array_equal(back.ids, cs.ids)
    assert back.meta == cs.meta and back.attrs == {"model": "conmh"} and back.bits == 32
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF
    bad = tmp_path / "bad.bsc"
    bad.write_bytes(bytes(raw))
    with pytest.raises(FileFormatError, match="checksum"):
        CodeSet.load(bad)
    bad.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(FileFormatError, match="truncated"):
        CodeSet.load(bad)
    bad.write_bytes(b"hello world, not codes")
    with pytest.raises(FileFormatError, match="magic"):
        CodeSet.load(bad)
    with pytest.raises(FileFormatError, match="no such"):
        CodeSet.load(tmp_path / "missing.bsc")


def test_codeset_validation():
    with pytest.raises(InputError, match="unique"):
        CodeSet(np.zeros((2, 1), np.uint8), np.array([1, 1]), 8)
    with pytest.raises(InputError, match="ids"):
        CodeSet(np.zeros((2, 1), np.uint8), np.array([1]), 8)
    with pytest.raises(InputError, match="meta column"):
        CodeSet(np.zeros((2, 1), np.uint8), np.array([1, 2]), 8, meta={"a": [1]})


def test_codeset_keeps_exact_zeros_through_save_and_load(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.choice([-1.0, 0.0, 1.0], size=(20, 16), p=[0.45, 0.1, 0.45]).astype(np.float32)
    cs = CodeSet.from_signed(x)
    assert cs.ternary
    cs.save(tmp_path / "t.codes")
    back = CodeSet.load(tmp_path / "t.codes")
    np.testing.assert_array_equal(back.signed(), x)  # old files packed 0 as -1
    np.testing.assert_array_equal(back.codes, cs.codes)  # Hamming-search bits: 0 -> bit 0
    assert back.for_eval() is not back.codes and back.for_eval().dtype == np.float32
    binary = CodeSet.from_signed(np.where(x == 0, 1.0, x))
    assert not binary.ternary and binary.for_eval().dtype == np.uint8


def test_codeset_ids_follow_the_index_rule():
    with pytest.raises(InputError, match="ids must be >= 0"):
        CodeSet(np.zeros((2, 1), np.uint8), np.array([0, -3]), 8)
    with pytest.raises(InputError, match="unique"):
        CodeSet(np.zeros((2, 1), np.uint8), np.array([4, 4]), 8)
    with pytest.raises(InputError, match="integers"):
        CodeSet(np.zeros((2, 1), np.uint8), np.array([0.5, 1.5]), 8)


def test_codeset_refuses_real_values_instead_of_packing_them():
    with pytest.raises(InputError, match="binarise"):
        CodeSet.from_signed(np.full((2, 8), 0.25))

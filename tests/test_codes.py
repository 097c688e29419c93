from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bitseek.codes import CodeSet, as_signed, hamming, pack, sign, to_bits, unpack
from bitseek.errors import FileFormatError, InputError


def test_pack_bit_order_is_numpy_packbits_msb_first():
    codes = np.array([[1, -1, -1, -1, -1, -1, -1, 1]], dtype=np.float32)
    assert pack(codes).tolist() == [[0b10000001]]


def test_zero_packs_as_bit_zero_and_sign_rules():
    x = np.array([[0.0, 2.0, -3.0, 0.0, 1, 1, 1, 1]])
    assert pack(x).tolist() == pack(np.array([[-1, 1, -1, -1, 1, 1, 1, 1]])).tolist()
    assert sign(x, "keep")[0, :4].tolist() == [0, 1, -1, 0]
    assert sign(x, "pos")[0, 0] == 1 and sign(x, "neg")[0, 0] == -1


def test_pack_accepts_torch_bool_and_01():
    t = torch.tensor([[1.0, -1.0] * 4])
    assert pack(t).tolist() == pack(np.array([[1, 0] * 4])).tolist() == pack(np.array([[True, False] * 4])).tolist()


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.sampled_from([8, 16, 24, 64, 128]), st.integers(0, 2**31 - 1))
def test_roundtrip_and_hamming_match_reference(n, bits, seed):
    rng = np.random.default_rng(seed)
    x = rng.choice([-1.0, 1.0], size=(n, bits)).astype(np.float32)
    p = pack(x)
    np.testing.assert_array_equal(unpack(p, bits), x)
    np.testing.assert_array_equal(as_signed(p), x)
    ref = (x[:, None, :] != x[None, :, :]).sum(-1)
    np.testing.assert_array_equal(hamming(p, p, chunk=3), ref)
    np.testing.assert_array_equal(hamming(p, p), 0.5 * (bits - x @ x.T))


def test_bad_inputs():
    with pytest.raises(InputError, match="multiple of 8"):
        pack(np.ones((2, 12)))
    with pytest.raises(InputError, match="NaN"):
        pack(np.array([[np.nan] * 8]))
    with pytest.raises(InputError, match="bits"):
        hamming(np.zeros((1, 8), np.uint8), np.zeros((1, 4), np.uint8))
    with pytest.raises(InputError, match="uint8"):
        hamming(np.zeros((1, 8), np.int32), np.zeros((1, 8), np.uint8))
    with pytest.raises(InputError, match="2-D"):
        to_bits(np.ones(8))


def test_codeset_roundtrip_and_corruption(tmp_path):
    rng = np.random.default_rng(0)
    cs = CodeSet.from_signed(rng.standard_normal((50, 32)), ids=np.arange(100, 150),
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

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bitseek.codes import as_signed, binarize, hamming, pack, popcount, sign, to_bits, to_signed, unpack, words, zero_mask
from bitseek.errors import InputError


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


def test_binarize_and_to_signed_have_opposite_jobs_with_explicit_names():
    real = np.array([[0.3, -2.0, 0.0, 1.0] * 2])
    # binarize: real values -> their sign (zeros kept under the default rule)
    assert binarize(real).tolist() == [[1, -1, 0, 1] * 2]
    assert sign is binarize
    # to_signed: codes only; real values are refused, naming the fix
    with pytest.raises(InputError, match="binarise real-valued outputs first"):
        to_signed(real)
    assert to_signed(np.array([[1, -1, 0, 1] * 2], np.int8)).dtype == np.float32
    assert to_signed(pack(np.ones((1, 8)))).tolist() == [[1.0] * 8]
    # the old name no longer binarises silently (it used to turn 0.3 into +1)
    with pytest.raises(InputError, match="must be -1, 0 or \\+1"):
        as_signed(real)


def test_evaluator_uses_the_one_copy_of_the_bit_helpers():
    import bitseek.eval.inputs as inputs

    assert inputs.to_signed is to_signed and inputs.popcount is popcount and inputs.words is words
    assert not hasattr(inputs, "_signed") and not hasattr(inputs, "_popcount")


def test_popcount_and_words_match_a_bit_count():
    rng = np.random.default_rng(3)
    p = rng.integers(0, 256, size=(7, 12), dtype=np.uint8)
    w = words(p)
    assert w.dtype == np.uint64 and w.shape == (7, 2)
    np.testing.assert_array_equal(popcount(w).sum(1), np.unpackbits(p, axis=1).sum(1))


def test_unpack_restores_exact_zeros_from_the_mask():
    x = np.array([[1, 0, -1, 0, 1, 1, -1, 0]], np.float32)
    z = zero_mask(x)
    assert z is not None and zero_mask(np.sign(x + 0.5)) is None
    np.testing.assert_array_equal(unpack(pack(x), zeros=z), x)

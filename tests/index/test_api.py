"""The shared contract: ids, removal, padding, input forms and errors, CodeSet helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bitseek.codes import CodeSet, unpack
from bitseek.errors import InputError
from bitseek.index import (
    PAD_HAMMING,
    PAD_ID,
    PAD_SIMILARITY,
    RangeResult,
    index_from_codeset,
    make_index,
)

ALL_SPECS = ["flat", "ivf4,nprobe=4", "mih2,nflip=8", "hnsw8,ef_search=100", "float-ip"]


def _index_and_data(spec: str, n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    if spec == "float-ip":
        return make_index(spec, dim=5), rng.standard_normal((n, 5)).astype(np.float32)
    index = make_index(spec, bits=16)
    index.train(rng.integers(0, 256, (100, 2), dtype=np.uint8))  # a no-op except for IVF
    return index, rng.integers(0, 256, (n, 2), dtype=np.uint8)


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_removed_ids_never_come_back(spec):
    index, data = _index_and_data(spec)
    ids = np.arange(120) * 11 + 5
    index.add(data, ids)
    gone = ids[::2]
    assert index.remove(gone) == 60 and len(index) == 60
    assert index.ids.tolist() == ids[1::2].tolist()  # insertion order survives
    _, i = index.search(data, 120)
    assert not np.isin(i, gone).any()
    assert set(i[i >= 0].tolist()) <= set(ids[1::2].tolist())
    radius = -1e6 if spec == "float-ip" else 16  # everything
    _, hits = index.range_search(data[:3], radius)[0]
    assert sorted(hits.tolist()) == sorted(ids[1::2].tolist())
    assert 5 not in index and 16 in index and "x" not in index


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_padding_empty_index_and_empty_queries(spec):
    index, data = _index_and_data(spec, n=3)
    pad = PAD_SIMILARITY if spec == "float-ip" else PAD_HAMMING
    d, i = index.search(data[:2], 4)  # empty index: all padding
    assert d.shape == i.shape == (2, 4) and (i == PAD_ID).all() and (d == pad).all()
    index.add(data)
    d, i = index.search(data[:2], 5)
    assert (i[:, 3:] == PAD_ID).all() and (d[:, 3:] == pad).all() and (i[:, :3] >= 0).all()
    d, i = index.search(data[:0], 5)
    assert d.shape == i.shape == (0, 5)
    r = index.range_search(data[:0], 1)
    assert len(r) == 0 and r.lims.tolist() == [0]


def test_ids_rules():
    index = make_index("flat", bits=8)
    codes = np.arange(6, dtype=np.uint8)[:, None]
    assert index.add(codes[:3]).tolist() == [0, 1, 2]  # automatic ids
    assert index.add(codes[3:4], [40]).tolist() == [40]
    assert index.add(codes[4:5]).tolist() == [41]  # above any id ever added
    index.remove([41])
    assert index.add(codes[5:6]).tolist() == [42]  # a removed id is not reused
    before = index.search(codes, 3)
    with pytest.raises(InputError, match="already in the index, e.g. \\[40\\]"):
        index.add(codes[:2], [100, 40])
    with pytest.raises(InputError, match="duplicates, e.g. \\[7\\]"):
        index.add(codes[:2], [7, 7])
    with pytest.raises(InputError, match=">= 0"):
        index.add(codes[:1], [-1])
    with pytest.raises(InputError, match="must be integers"):
        index.add(codes[:1], [1.0])
    with pytest.raises(InputError, match="2 ids for 1 codes"):
        index.add(codes[:1], [1, 2])
    assert len(index) == 5  # failed adds changed nothing
    for got, want in zip(index.search(codes, 3), before):
        np.testing.assert_array_equal(got, want)


def test_remove_unknown_ids():
    index = make_index("flat", bits=8)
    index.add(np.arange(5, dtype=np.uint8)[:, None], [10, 20, 30, 40, 50])
    with pytest.raises(InputError, match="1 id\\(s\\) not in the index, e.g. \\[99\\]"):
        index.remove([10, 99])
    assert len(index) == 5  # all or nothing
    assert index.remove([10, 99], missing="ignore") == 1
    assert index.remove(np.array([20, 20, 30])) == 2  # repeated ids count once
    assert index.remove(40) == 1  # a scalar id
    assert index.remove([], missing="error") == 0
    with pytest.raises(InputError, match="missing must be"):
        index.remove([50], missing="skip")
    assert index.ids.tolist() == [50]


def test_input_forms_give_identical_results():
    rng = np.random.default_rng(1)
    packed = rng.integers(0, 256, (40, 2), dtype=np.uint8)
    signed = unpack(packed)
    forms = [packed, signed, signed > 0, (signed > 0).astype(np.int64), torch.from_numpy(signed)]
    results = []
    for form in forms:
        index = make_index("flat", bits=16)
        index.add(form, np.arange(40))
        results.append(index.search(form[:5], 7))
    for d, i in results[1:]:
        np.testing.assert_array_equal(d, results[0][0])
        np.testing.assert_array_equal(i, results[0][1])


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros(2, np.uint8), "2-D"),
        (np.zeros((3, 4), np.uint8), "4 bytes \\(32 bits\\).*16-bit"),
        (np.zeros((3, 8), np.uint8), "unpacked 0/1 codes must be bool or int"),
        (np.zeros((3, 15)), "15 code columns"),
        (np.full((3, 16), np.nan), "NaN"),
        (np.array([["a"] * 16]), "numeric"),
    ],
)
def test_bad_codes(bad, message):
    index = make_index("flat", bits=16)
    with pytest.raises(InputError, match=message):
        index.add(bad)
    with pytest.raises(InputError, match=message):
        index.search(bad, 1)


def test_bad_k_and_radius():
    index = make_index("flat", bits=16)
    q = np.zeros((1, 2), np.uint8)
    for k in (0, -1, 1.5, True, "3"):
        with pytest.raises(InputError, match="k must be a positive integer"):
            index.search(q, k)
    for r in (-1, 1.5, True):
        with pytest.raises(InputError, match="radius"):
            index.range_search(q, r)
    index.add(np.array([[255, 255], [0, 0]], np.uint8), [1, 2])
    dist, ids = index.range_search(q, 1000)[0]  # above the code length: everything
    assert ids.tolist() == [2, 1] and dist.tolist() == [0, 16]
    f = make_index("float-ip", dim=2)
    for r in (float("nan"), float("inf"), "0.5"):
        with pytest.raises(InputError, match="radius"):
            f.range_search(np.zeros((1, 2)), r)
    with pytest.raises(InputError, match="NaN or inf"):
        f.add(np.array([[1.0, np.inf]]))
    with pytest.raises(InputError, match="real numbers"):
        f.add(np.array([[True, False]]))


def test_range_result_access():
    r = RangeResult(np.array([0, 2, 2, 3]), np.array([0, 1, 4], np.int32), np.array([5, 6, 7]))
    assert len(r) == 3 and r.counts.tolist() == [2, 0, 1]
    assert [i.tolist() for _, i in r] == [[5, 6], [], [7]]  # (D, I) per query, as faiss
    assert r[-1][0].tolist() == [4] and r.ids.tolist() == [5, 6, 7] and r.distances.tolist() == [0, 1, 4]
    capped = r.cap(1)
    assert capped.lims.tolist() == [0, 1, 1, 2] and capped.ids.tolist() == [5, 7]
    with pytest.raises(IndexError):
        r[3]


def test_codeset_helpers(tmp_path):
    rng = np.random.default_rng(2)
    cs = CodeSet(rng.integers(0, 256, (300, 4), dtype=np.uint8), np.arange(300) * 3 + 1, 32)
    cs.save(tmp_path / "codes.bin")
    flat = make_index("flat", bits=32)
    assert flat.add_codeset(tmp_path / "codes.bin").tolist() == cs.ids.tolist()
    d, i = flat.search(cs.codes[:4], 1)
    assert i[:, 0].tolist() == cs.ids[:4].tolist() and (d[:, 0] == 0).all()
    ivf = index_from_codeset(cs, "ivf8,nprobe=8", train_size=100)
    assert ivf.is_trained and len(ivf) == 300
    assert ivf.search(cs.codes[:4], 1)[1][:, 0].tolist() == cs.ids[:4].tolist()
    with pytest.raises(InputError, match="32-bit codes, the index holds 64-bit"):
        make_index("flat", bits=64).add_codeset(cs)
    with pytest.raises(InputError, match="float descriptors"):
        make_index("float-ip", dim=4).add_codeset(cs)
    with pytest.raises(InputError, match="expected a CodeSet"):
        flat.add_codeset(cs.codes)


def test_every_valid_codeset_goes_into_the_index():
    # CodeSet and the index share one id rule (bitseek._array.as_ids): whatever a CodeSet accepts,
    # add_codeset accepts, ids and metadata included; what the index refuses, CodeSet refuses first
    big = np.iinfo(np.int64).max
    ids = np.array([big, 0, 5, big - 1], dtype=np.uint64)
    cs = CodeSet(np.arange(8, dtype=np.uint8).reshape(4, 2), ids, 16, meta={"path": ["a", "b", "c", "d"]})
    index = make_index("flat", bits=16)
    assert index.add_codeset(cs).tolist() == [big, 0, 5, big - 1]
    assert index.metadata([5, big]) == {"path": ["c", "a"]} and big in index
    with pytest.raises(InputError, match=">= 0"):
        CodeSet(np.zeros((1, 2), np.uint8), np.array([-3]), 16)
    ternary = CodeSet.from_signed(np.array([[1.0, 0.0] * 8]), ids=[9])  # exact zeros kept in the file
    assert index.add_codeset(ternary).tolist() == [9]

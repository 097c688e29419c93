"""The one safe unpickler: allow-lists, and allocations bounded by the file's own size."""

from __future__ import annotations

import pickle
import resource

import numpy as np
import pytest
from numpy._core import multiarray

from bitseek.errors import FileFormatError
from bitseek.safe_pickle import ALLOW_NOTHING, ALLOW_NUMPY_ARRAYS, PickleRefused, load_file, loads


class _Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_34_byte_bytearray_bomb_is_refused_without_allocating():
    bomb = b"\x80\x02c__builtin__\nbytearray\n\x8a\x04\x00\x00\x00\x20\x85R."  # bytearray(2**29): 512 MiB
    before = _peak_rss_mb()
    with pytest.raises(PickleRefused, match="asks for 536870912 bytes"):
        loads(bomb, ALLOW_NUMPY_ARRAYS, "bomb.pkl")
    assert _peak_rss_mb() - before < 100


def test_huge_reconstruct_shape_is_a_clear_error_not_memory_error():
    data = pickle.dumps(_Reduce(multiarray._reconstruct, (np.ndarray, (2**44,), b"b")), protocol=2)
    with pytest.raises(PickleRefused, match=r"an array of shape \(17592186044416,\)"):
        loads(data, ALLOW_NUMPY_ARRAYS, "x.pkl")


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_real_arrays_load_under_every_protocol(protocol):
    arr = np.arange(3 * 3072, dtype=np.uint8).reshape(3, 3072)
    obj = {b"data": arr, b"labels": [1, 2, 3], b"batch_label": b"training batch 1 of 5"}
    out = loads(pickle.dumps(obj, protocol=protocol), ALLOW_NUMPY_ARRAYS, "b.pkl", encoding="bytes")
    np.testing.assert_array_equal(out[b"data"], arr)
    assert out[b"labels"] == [1, 2, 3]


def test_code_is_refused_and_never_runs(tmp_path):
    import os

    marker = tmp_path / "pwned"
    data = pickle.dumps(_Reduce(os.system, (f"touch {marker}",)), protocol=2)
    for allowed in (ALLOW_NUMPY_ARRAYS, ALLOW_NOTHING):
        with pytest.raises(PickleRefused) as e:
            loads(data, allowed, "evil.pkl")
        assert e.value.global_name in ("posix.system", "os.system")
    assert not marker.exists()


def test_nothing_allowed_still_loads_plain_data():
    obj = {"imlist": ["a"], "gnd": [{"bbx": [1.0, 2.0], "easy": [0]}], "n": 3}
    assert loads(pickle.dumps(obj, protocol=3), ALLOW_NOTHING, "g.pkl") == obj
    with pytest.raises(PickleRefused, match="numpy"):
        loads(pickle.dumps({"x": np.zeros(2)}), ALLOW_NOTHING, "g.pkl")


def test_truncated_empty_and_missing(tmp_path):
    data = pickle.dumps({"a": list(range(100))}, protocol=3)
    with pytest.raises(FileFormatError, match="truncated"):
        loads(data[: len(data) // 2], ALLOW_NOTHING, "t.pkl")
    (tmp_path / "e.pkl").write_bytes(b"")
    with pytest.raises(FileFormatError, match=r"e\.pkl: (corrupt|refused or invalid) pickle"):
        load_file(tmp_path / "e.pkl", ALLOW_NOTHING)
    with pytest.raises(FileFormatError, match="file not found"):
        load_file(tmp_path / "missing.pkl", ALLOW_NOTHING)


def test_persistent_ids_are_refused():
    with pytest.raises(PickleRefused, match="persistent"):
        loads(b"\x80\x02X\x01\x00\x00\x00aQ.", ALLOW_NOTHING, "p.pkl")  # BINPERSID


def test_cifar_reader_uses_the_bounds(tmp_path):
    from bitseek.data.cifar import read_cifar_batch

    bad = {b"data": _Reduce(multiarray._reconstruct, (np.ndarray, (2**40, 3072), b"B")), b"labels": []}
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(FileFormatError, match="data_batch_1: refused or invalid pickle .*more than a file"):
        read_cifar_batch(p)

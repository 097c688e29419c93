"""Memory-mapped opening of a saved flat index: equal results, read-only, clear refusals."""

from __future__ import annotations

import numpy as np
import pytest

from bitseek.codes.synthetic import ClusteredCodes
from bitseek.errors import InputError
from bitseek.index import IndexFileError, load_index, make_index


@pytest.fixture()
def saved(tmp_path):
    pop = ClusteredCodes(bits=64, clusters=32, spread=0.4, seed=4)
    db = pop.sample(5000)
    db[4000:4100] = db[:100]  # exact duplicates later in the file: ties across blocks
    index = make_index("flat", bits=64)
    index.add(db, np.arange(5000) * 3 + 11, meta={"n": list(range(5000))})
    index.save(tmp_path / "flat.bsi")
    return index, pop.sample(40, stream=1), tmp_path / "flat.bsi"


@pytest.mark.parametrize("block_rows", [1 << 23, 1000, 777])
def test_mapped_results_equal_the_in_memory_index(saved, block_rows, monkeypatch):
    from bitseek.index.faiss.mapped import MappedFlatIndex

    monkeypatch.setattr(MappedFlatIndex, "block_rows", block_rows)
    index, q, path = saved
    mapped = load_index(path, mmap=True)
    assert isinstance(mapped, MappedFlatIndex) and len(mapped) == len(index) and mapped.exact
    for k in (1, 10, 100, 6000):  # 6000 > n: padded rows
        for got, want in zip(mapped.search(q, k), index.search(q, k)):
            np.testing.assert_array_equal(got, want)
    got, want = mapped.range_search(q, 12), index.range_search(q, 12)
    for a, b in zip((got.lims, got.distances, got.ids), (want.lims, want.distances, want.ids)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(mapped.ids, index.ids)
    np.testing.assert_array_equal(mapped.contains([11, 12, 14]), [True, False, True])
    assert mapped.metadata([14]) == {"n": [1]}


def test_mapped_is_read_only_and_refuses_other_engines(saved, tmp_path):
    _, q, path = saved
    mapped = load_index(path, mmap=True, verify=False)
    for call in (lambda: mapped.add(q), lambda: mapped.remove([11]), lambda: mapped.save(tmp_path / "x.bsi")):
        with pytest.raises(InputError, match="memory-mapped \\(read-only\\)"):
            call()
    ivf = make_index("ivf4", bits=64)
    ivf.train(q)
    ivf.add(q)
    ivf.save(tmp_path / "ivf.bsi")
    with pytest.raises(InputError, match="mmap=True opens flat indexes"):
        load_index(tmp_path / "ivf.bsi", mmap=True)


def test_mapped_open_checks_the_file(saved):
    _, _, path = saved
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(IndexFileError, match="checksum mismatch"):
        load_index(path, mmap=True)
    path.write_bytes(bytes(raw[: len(raw) - 100]))
    with pytest.raises(IndexFileError, match="do not add up|truncated"):
        load_index(path, mmap=True, verify=False)

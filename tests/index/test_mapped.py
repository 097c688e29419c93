"""Memory-mapped opening of saved flat and ivf indexes: equal results, read-only, clear refusals."""

from __future__ import annotations

import numpy as np
import pytest

from bitseek.codes.synthetic import ClusteredCodes
from bitseek.errors import InputError
from bitseek.index import IndexFileError, load_index, make_index
from bitseek.index.persist import read_index_file, write_index_file


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


def test_mapped_is_read_only_and_refuses_other_engines(saved, saved_ivf, tmp_path):
    _, q, path = saved
    for p in (path, saved_ivf[2]):
        mapped = load_index(p, mmap=True, verify=False)
        for call in (lambda: mapped.add(q), lambda: mapped.remove([11]), lambda: mapped.save(tmp_path / "x.bsi"),
                     lambda: mapped.train(q)):
            with pytest.raises(InputError, match="memory-mapped \\(read-only\\)"):
                call()
    hnsw = make_index("hnsw8", bits=64)
    hnsw.add(q)
    hnsw.save(tmp_path / "hnsw.bsi")
    with pytest.raises(InputError, match="mmap=True opens flat and ivf indexes"):
        load_index(tmp_path / "hnsw.bsi", mmap=True)


@pytest.fixture()
def saved_ivf(tmp_path):
    pop = ClusteredCodes(bits=64, clusters=64, spread=0.4, seed=5)
    db = pop.sample(20_000)
    db[15_000:15_200] = db[:200]  # exact duplicates: ties inside and across lists
    index = make_index("ivf64,nprobe=2", bits=64)
    index.train(db[:6000])
    ids = np.arange(20_000) * 3 + 1
    index.add(db, ids, meta={"n": list(range(20_000))})
    index.remove(ids[::211])  # removals compact faiss's lists: the file must still map
    index.save(tmp_path / "ivf.bsi")
    return index, pop.sample(60, stream=1), tmp_path / "ivf.bsi"


@pytest.mark.parametrize("resident_bytes", [64 << 20, 1])  # 1: one query per batch
def test_mapped_ivf_results_equal_the_in_memory_index(saved_ivf, resident_bytes, monkeypatch):
    from bitseek.index.faiss.mapped import MappedIVFIndex

    monkeypatch.setattr(MappedIVFIndex, "resident_bytes", resident_bytes)
    index, q, path = saved_ivf
    mapped = load_index(path, mmap=True)
    assert isinstance(mapped, MappedIVFIndex) and mapped.memory_mapped and not mapped.exact
    assert len(mapped) == len(index) and mapped.spec == index.spec == "ivf64,nprobe=2"
    for params in ({}, {"nprobe": 1}, {"nprobe": 7}, {"nprobe": 64}):
        for k in (1, 10, 100, 25_000):  # 25000 > n: padded rows
            for got, want in zip(mapped.search(q, k, **params), index.search(q, k, **params)):
                np.testing.assert_array_equal(got, want)
        got, want = mapped.range_search(q, 14, **params), index.range_search(q, 14, **params)
        for a, b in zip((got.lims, got.distances, got.ids), (want.lims, want.distances, want.ids)):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(mapped.ids, index.ids)
    np.testing.assert_array_equal(mapped.contains([1, 2, 4, 1 + 3 * 211]), [False, False, True, False])
    assert mapped.metadata([4]) == {"n": [1]}
    mapped.set_options(nprobe=5)  # the default of later calls; the file is not touched
    np.testing.assert_array_equal(mapped.search(q, 10)[1], index.search(q, 10, nprobe=5)[1])
    assert mapped.search(q[:0], 5)[0].shape == (0, 5)


def _crafted_ivf(path, tmp_path, change):
    header, sections = read_index_file(path)
    body = {name: bytearray(sections[name].tobytes()) for name, _ in header.pop("sections")}
    change(header, body)
    out = tmp_path / "crafted.bsi"
    write_index_file(out, header, [(k, np.frombuffer(bytes(v), np.uint8)) for k, v in body.items()])
    return out


def test_mapped_ivf_refuses_files_that_disagree_with_themselves(saved_ivf, tmp_path):
    import struct

    _, _, path = saved_ivf

    def nlist_in_header(h, b):
        h["params"]["nlist"] = 128

    def list_size(h, b):
        at = b["faiss"].find(b"full")
        struct.pack_into("<Q", b["faiss"], at + 12, 1 << 40)

    def rows_in_header(h, b):
        h["n_slots"] = h["n_alive"] = h["n_slots"] - 1
        b["ids"] = b["ids"][:-8]

    for change, message in ((nlist_in_header, "header says nlist=128, the payload holds 64 lists"),
                            (list_size, "a list claims"), (rows_in_header, "the header says ivf with")):
        crafted = _crafted_ivf(path, tmp_path, change)
        with pytest.raises(IndexFileError, match=message) as err:
            load_index(crafted, mmap=True)
        assert str(crafted) in str(err.value) and "\n" not in str(err.value)


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

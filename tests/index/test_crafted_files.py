"""Index files are validated before faiss allocates: a crafted file (valid checksum, lying size
fields) is a one-line IndexFileError, never std::bad_alloc / MemoryError or a crash."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from bitseek.cli.main import main
from bitseek.errors import FileFormatError
from bitseek.index import IndexFileError, load_index, make_index
from bitseek.index.persist import read_index_file, write_index_file

HUGE = 1 << 40


def _saved(tmp_path, spec: str, n: int = 200, remove: int = 0):
    rng = np.random.default_rng(0)
    if spec == "float-ip":
        index, x = make_index(spec, dim=4), rng.standard_normal((n, 4)).astype(np.float32)
    else:
        index, x = make_index(spec, bits=16), rng.integers(0, 256, (n, 2), dtype=np.uint8)
        index.train(x)
    index.add(x)
    if remove:
        index.remove(np.arange(remove))
    path = tmp_path / "good.bsi"
    index.save(path)
    header, sections = read_index_file(path)
    header.pop("sections")
    return header, {k: bytearray(v.tobytes()) for k, v in sections.items()}


def _rewrite(tmp_path, header, sections, name="crafted.bsi"):
    """Write the changed parts back with a valid checksum, as a crafting tool would."""
    path = tmp_path / name
    write_index_file(path, header, [(k, np.frombuffer(bytes(v), np.uint8)) for k, v in sections.items()])
    return path


def _refused(path, message: str) -> None:
    with pytest.raises(IndexFileError, match=message) as err:
        load_index(path)
    assert isinstance(err.value, FileFormatError) and "\n" not in str(err.value) and str(path) in str(err.value)


def test_ivf_list_size_beyond_the_file(tmp_path):
    header, sections = _saved(tmp_path, "ivf4")
    faiss_bytes = sections["faiss"]
    at = faiss_bytes.find(b"full")
    struct.pack_into("<Q", faiss_bytes, at + 12, HUGE)  # the first list's size (faiss: std::bad_alloc)
    _refused(_rewrite(tmp_path, header, sections), "a list claims")


def test_ivf_nlist_beyond_its_centroids(tmp_path):
    header, sections = _saved(tmp_path, "ivf4")
    struct.pack_into("<Q", sections["faiss"], 4 + 21, HUGE)  # nlist, right after the binary header
    _refused(_rewrite(tmp_path, header, sections), "nlist=")


def test_ivf_header_params_are_not_built_before_the_payload_agrees(tmp_path):
    header, sections = _saved(tmp_path, "ivf4")
    header["params"] = {"nlist": HUGE}  # building IndexBinaryIVF(nlist=2^40) would exhaust memory
    _refused(_rewrite(tmp_path, header, sections), "nlist")


@pytest.mark.parametrize("spec", ["flat", "mih2", "hnsw8"])
def test_flat_storage_length_beyond_the_file(tmp_path, spec):
    header, sections = _saved(tmp_path, spec)
    buf = sections["faiss"]
    flat = buf.find(b"IBxF")
    struct.pack_into("<Q", buf, flat + 4 + 21, HUGE)  # the code vector's length
    _refused(_rewrite(tmp_path, header, sections), "claims")


def test_float_vectors_beyond_the_file(tmp_path):
    header, sections = _saved(tmp_path, "float-ip")
    struct.pack_into("<Q", sections["faiss"], 4 + 4 + 8 * 3 + 1 + 4, HUGE)
    _refused(_rewrite(tmp_path, header, sections), "claims")


def test_hnsw_graph_pointing_outside_the_nodes(tmp_path):
    header, sections = _saved(tmp_path, "hnsw8")
    buf = sections["faiss"]
    storage = buf.find(b"IBxF")
    struct.pack_into("<i", buf, storage - 20 - 8, 10**6)  # last neighbour entry, before the 5 ints
    _refused(_rewrite(tmp_path, header, sections), "neighbour ids")


def test_trailing_bytes_and_other_faiss_types(tmp_path):
    header, sections = _saved(tmp_path, "flat")
    sections["faiss"] += b"\0" * 8
    _refused(_rewrite(tmp_path, header, sections), "unexpected bytes")
    header2, sections2 = _saved(tmp_path, "ivf4")
    _refused(_rewrite(tmp_path, header, {"faiss": sections2["faiss"], "ids": sections["ids"]}, "mixed.bsi"), "IBxF")


@pytest.mark.parametrize("spec", ["flat", "ivf4", "mih2", "faiss:BIVF4"])
def test_any_single_byte_change_loads_or_is_refused(tmp_path, spec):
    # a sweep over the payload: every damaged file either loads (the byte did not matter) and
    # then searches, or is an IndexFileError; nothing else escapes
    header, sections = _saved(tmp_path, spec, n=60, remove=3)
    original = bytes(sections["faiss"])
    q = np.zeros((2, 2), np.uint8)
    for pos in range(0, len(original), max(1, len(original) // 300)):
        for value in (0x00, 0xFF):
            buf = bytearray(original)
            buf[pos] = value
            path = _rewrite(tmp_path, header, {"faiss": buf, "ids": sections["ids"]})
            try:
                index = load_index(path)
            except IndexFileError:
                continue
            index.search(q, 3)
            index.range_search(q, 2)


def test_search_cli_names_the_crafted_file_in_one_line(tmp_path, capsys):
    header, sections = _saved(tmp_path, "ivf4")
    at = sections["faiss"].find(b"full")
    struct.pack_into("<Q", sections["faiss"], at + 12, HUGE)
    path = _rewrite(tmp_path, header, sections)
    np.save(tmp_path / "q.npy", np.zeros((1, 2), np.uint8))
    assert main(["search", "--index", str(path), "--queries", str(tmp_path / "q.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bitseek search: error:") and str(path) in err and len(err.splitlines()) == 1

"""Factory-string grammar and its error messages."""

from __future__ import annotations

import pytest

from bitseek.errors import ConfigError
from bitseek.index import (
    BinaryFlatIndex,
    BinaryHNSWIndex,
    BinaryIVFIndex,
    FloatIPIndex,
    MultiHashIndex,
    list_backends,
    make_index,
    parse_spec,
)


@pytest.mark.parametrize(
    "spec, cls, canonical",
    [
        ("flat", BinaryFlatIndex, "flat"),
        (" FLAT ", BinaryFlatIndex, "flat"),
        ("ivf1024", BinaryIVFIndex, "ivf1024,nprobe=1"),
        ("ivf1024, nprobe=16", BinaryIVFIndex, "ivf1024,nprobe=16"),
        ("mih4", MultiHashIndex, "multihash4x16,nflip=1"),
        ("multihash4x16,nflip=0", MultiHashIndex, "multihash4x16,nflip=0"),
        ("multihash3x20", MultiHashIndex, "multihash3x20,nflip=1"),
        ("hnsw32,ef_search=128", BinaryHNSWIndex, "hnsw32,ef_construction=40,ef_search=128"),
    ],
)
def test_binary_specs(spec, cls, canonical):
    index = make_index(spec, bits=64)
    assert type(index) is cls and index.spec == canonical and index.bits == 64
    assert make_index(index.spec, bits=64).spec == canonical  # canonical form parses back to itself


def test_float_spec_and_backend_list():
    index = make_index("float-ip", dim=2048)
    assert type(index) is FloatIPIndex and index.dim == 2048 and index.metric == "ip" and index.spec == "float-ip"
    assert list_backends() == ["auto", "faiss", "flat", "float-ip", "hnsw", "ivf", "milvus", "milvus-ip", "multihash"]
    p = parse_spec("multihash2x8,nflip=3")
    assert p.cls is MultiHashIndex and p.params == {"nhash": 2, "b": 8} and p.options == {"nflip": 3}


@pytest.mark.parametrize(
    "spec, kwargs, message",
    [
        ("", {"bits": 64}, "non-empty string"),
        ("flatt", {"bits": 64}, "did you mean 'flat'"),
        ("ivf", {"bits": 64}, "unknown index engine 'ivf'.*ivf<nlist>"),
        ("bananas", {"bits": 64}, "unknown index engine 'bananas'"),
        ("ivf16,nprobes=4", {"bits": 64}, "no option 'nprobes'; did you mean 'nprobe'"),
        ("ivf16,nprobe", {"bits": 64}, "must look like name=value"),
        ("ivf16,nprobe=2,nprobe=3", {"bits": 64}, "given twice"),
        ("ivf16,nprobe=-1", {"bits": 64}, "non-negative integer"),
        ("ivf16,nprobe=1.5", {"bits": 64}, "non-negative integer"),
        ("ivf16,nprobe=0", {"bits": 64}, "nprobe: must be >= 1"),
        ("ivf0", {"bits": 64}, "nlist must be >= 1"),
        ("flat,nprobe=2", {"bits": 64}, "flat has no option 'nprobe'"),
        ("mih3", {"bits": 64}, "do not split into 3 equal substrings"),
        ("multihash5x16", {"bits": 64}, "exceed the 64-bit code"),
        ("multihash1x65", {"bits": 128}, "must be in 1..64"),
        ("hnsw1", {"bits": 64}, "M must be >= 2"),
        ("flat", {"bits": 12}, "positive multiple of 8"),
        ("flat", {}, "needs bits="),
        ("flat", {"bits": 64, "dim": 32}, "contradicts"),
        ("float-ip", {"bits": 64}, "needs dim="),
        ("float-ip", {"dim": 0}, "dim must be a positive integer"),
        ("float-ip", {"dim": 8, "bits": 8}, "pass dim=, not bits="),
    ],
)
def test_bad_specs_raise_config_error(spec, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_index(spec, **kwargs)


def test_set_options_validates():
    index = make_index("hnsw16", bits=32)
    index.set_options(ef_search=7)
    assert index.options == {"ef_search": 7, "ef_construction": 40} and index._faiss.hnsw.efSearch == 7
    with pytest.raises(ConfigError, match="no option 'nprobe'"):
        index.set_options(nprobe=3)
    with pytest.raises(ConfigError, match="expected an integer"):
        index.set_options(ef_search="7")
    with pytest.raises(ConfigError, match=">= 1"):
        index.set_options(ef_search=0)
    assert index.options["ef_search"] == 7


# ------------------------------------------------------------------ grammar: case, text options, faiss:


def test_spec_values_keep_their_case_and_text_options_reach_the_engine():
    # a remote-style engine with text options, registered for this test only
    from bitseek.index import SearchIndex, register_engine
    from bitseek.index.api import unregister_engine

    class Remote(SearchIndex):
        engine = "remote"
        options_spec = {"uri": ("", None), "collection": ("", None), "nprobe": (1, 1)}

        def __init__(self, dim, params, options):
            self.dim, self.params, self.opts = dim, params, options

        spec = ids = property(lambda self: None)
        __len__ = contains = add = remove = search = range_search = save = lambda *a, **k: None
        _from_file = classmethod(lambda cls, *a: None)

    register_engine("remote", Remote)
    try:
        p = parse_spec(" Remote:uri=http://127.0.0.1:19530 , Collection=MyColl,nprobe=4")
        assert p.cls is Remote and p.params == {}
        assert p.options == {"uri": "http://127.0.0.1:19530", "collection": "MyColl", "nprobe": 4}
        index = make_index("remote:collection=MyColl", bits=64)
        assert index.opts == {"collection": "MyColl"}
        with pytest.raises(ConfigError, match="no option 'colection'; did you mean 'collection'"):
            parse_spec("remote:colection=x")
        with pytest.raises(ConfigError, match="nprobe needs a non-negative integer"):
            parse_spec("remote:nprobe=many")
    finally:
        unregister_engine("remote")
    with pytest.raises(ConfigError, match="unknown index engine"):
        parse_spec("remote:uri=x")


def test_faiss_factory_passthrough():
    from bitseek.index import FaissFactoryIndex

    index = make_index("faiss:BIVF8_HNSW4, NPROBE=3", bits=32)
    assert type(index) is FaissFactoryIndex and index.spec == "faiss:BIVF8_HNSW4,nprobe=3"
    assert index.search_params == {"nprobe": 1} and not index.exact
    assert make_index("faiss:BFlat", bits=32).exact
    assert make_index("faiss:BHNSW8", bits=32).search_params == {"ef_search": 1}
    with pytest.raises(ConfigError, match="BHash use the mih"):
        make_index("faiss:BHash2x16", bits=32)
    with pytest.raises(ConfigError, match="needs a binary factory string"):
        make_index("faiss:", bits=32)
    with pytest.raises(ConfigError, match="faiss has no option 'nprobe'"):
        make_index("faiss:BFlat,nprobe=3", bits=32)


def test_import_does_not_load_faiss():
    import subprocess
    import sys

    code = ("import sys, bitseek.index as I; I.parse_spec; I.engine_names(); "
            "assert 'faiss' not in sys.modules, 'faiss imported'; I.make_index('flat', bits=8); "
            "assert 'faiss' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)

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
    assert list_backends() == ["faiss", "flat", "float-ip", "hnsw", "ivf", "multihash"]
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

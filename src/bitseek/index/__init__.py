"""Search indexes over packed binary codes and float descriptors, with stable int64 ids.

``bitseek.index.api`` is the interface (:class:`SearchIndex`, :class:`RangeResult`, the engine
table); the faiss engines live in ``bitseek.index.faiss`` and are imported on first use, so
``import bitseek.index`` does not load faiss. ``make_index(spec, bits=...)`` builds an engine from a
factory string (grammar in ``bitseek.index.spec``) and ``load_index(path)`` reopens any saved index.
See ``docs/index.md``.
"""

from __future__ import annotations

from typing import Any

from bitseek.index.api import (
    ENGINES,
    PAD_HAMMING,
    PAD_ID,
    PAD_SIMILARITY,
    IndexFileError,
    IndexNotTrainedError,
    RangeResult,
    RWLock,
    SearchIndex,
    engine_class,
    engine_names,
    load_index,
    register_engine,
)
from bitseek.index.spec import index_from_codeset, list_backends, list_engines, make_index, parse_spec

Index = SearchIndex  # the name before the engine split

_LAZY = {  # faiss-backed names, imported when first asked for
    "FaissIndex": "bitseek.index.faiss.base",
    "BinaryIndex": "bitseek.index.faiss.binary",
    "BinaryFlatIndex": "bitseek.index.faiss.binary",
    "BinaryIVFIndex": "bitseek.index.faiss.ivf",
    "MultiHashIndex": "bitseek.index.faiss.multihash",
    "BinaryHNSWIndex": "bitseek.index.faiss.hnsw",
    "FloatIPIndex": "bitseek.index.faiss.float_ip",
    "FaissFactoryIndex": "bitseek.index.faiss.factory",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bitseek.index' has no attribute {name!r}")


__all__ = [
    "SearchIndex",
    "Index",
    "RangeResult",
    "IndexNotTrainedError",
    "IndexFileError",
    "RWLock",
    "PAD_ID",
    "PAD_HAMMING",
    "PAD_SIMILARITY",
    "ENGINES",
    "register_engine",
    "engine_class",
    "engine_names",
    "make_index",
    "parse_spec",
    "load_index",
    "list_backends",
    "list_engines",
    "index_from_codeset",
    *_LAZY,
]

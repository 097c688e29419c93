"""Search indexes over packed binary codes (and float descriptors) with stable int64 ids.

``make_index(spec, bits=...)`` builds a backend from a factory string (grammar in
``bitseek.index.spec``); every backend implements :class:`Index`: ``add``, ``remove``, ``search``,
``range_search``, ``train``, ``save``/``load``. See ``docs/index.md`` for the tie rule, padding and
the file format.
"""

from bitseek.index.base import (
    PAD_HAMMING,
    PAD_ID,
    PAD_SIMILARITY,
    Index,
    IndexNotTrainedError,
    RangeResult,
)
from bitseek.index.binary import BinaryFlatIndex, BinaryIndex
from bitseek.index.float_ip import FloatIPIndex
from bitseek.index.hnsw import BinaryHNSWIndex
from bitseek.index.ivf import BinaryIVFIndex
from bitseek.index.multihash import MultiHashIndex
from bitseek.index.spec import index_from_codeset, list_backends, load_index, make_index, parse_spec

__all__ = [
    "Index",
    "BinaryIndex",
    "BinaryFlatIndex",
    "BinaryIVFIndex",
    "MultiHashIndex",
    "BinaryHNSWIndex",
    "FloatIPIndex",
    "RangeResult",
    "IndexNotTrainedError",
    "PAD_ID",
    "PAD_HAMMING",
    "PAD_SIMILARITY",
    "make_index",
    "parse_spec",
    "load_index",
    "list_backends",
    "index_from_codeset",
]

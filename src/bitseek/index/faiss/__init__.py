"""faiss engines behind :class:`bitseek.index.api.SearchIndex`: ``flat``, ``ivf``, ``multihash``,
``hnsw``, ``float-ip`` and the ``faiss:<factory>`` passthrough. Importing this package imports faiss."""

from bitseek.index.faiss.base import FaissIndex
from bitseek.index.faiss.binary import BinaryFlatIndex, BinaryIndex
from bitseek.index.faiss.factory import FaissFactoryIndex
from bitseek.index.faiss.float_ip import FloatIPIndex
from bitseek.index.faiss.hnsw import BinaryHNSWIndex
from bitseek.index.faiss.ivf import BinaryIVFIndex
from bitseek.index.faiss.multihash import MultiHashIndex

__all__ = [
    "FaissIndex",
    "BinaryIndex",
    "BinaryFlatIndex",
    "BinaryIVFIndex",
    "MultiHashIndex",
    "BinaryHNSWIndex",
    "FloatIPIndex",
    "FaissFactoryIndex",
]

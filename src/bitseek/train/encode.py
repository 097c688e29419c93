"""Moved to :mod:`bitseek.encode` (encoding is inference); this path keeps old imports working."""

from bitseek.encode.extract import embed_dataset, encode_dataset

__all__ = ["encode_dataset", "embed_dataset"]

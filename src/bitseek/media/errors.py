"""The one error type of media decoding, so callers (ingest, the server) can skip a bad file and name it."""

from __future__ import annotations

from bitseek.errors import FileFormatError

__all__ = ["MediaError"]


class MediaError(FileFormatError):
    """A file is not a decodable image or video (corrupt, truncated, unsupported); the message names the path."""

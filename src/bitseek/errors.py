"""Exception types. Every error names the file or argument at fault and what is wrong with it."""

from __future__ import annotations


class BitseekError(Exception):
    """Base class for errors raised by bitseek on bad input."""


class InputError(BitseekError, ValueError):
    """An argument has the wrong shape, dtype or value."""


class FileFormatError(BitseekError, ValueError):
    """A file is missing a key, is truncated, corrupt or of an unsupported version."""


class ConfigError(BitseekError, ValueError):
    """A configuration key or value is invalid."""

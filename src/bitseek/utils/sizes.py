"""Byte sizes written the way people write them in configs ("8GB", "512MiB", "2e9") and back.

Decimal units (kB, MB, GB, TB) are powers of 1000 and binary ones (KiB, MiB, GiB, TiB) powers of
1024, as the IEC defines them, so "18.7 GB" here is the figure ``ls --si`` and the papers give.
"""

from __future__ import annotations

import re

from bitseek.errors import ConfigError

__all__ = ["parse_bytes", "format_bytes"]

_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*")


def parse_bytes(value: str | int | float, where: str) -> int:
    """A non-negative whole number of bytes from ``value``; a ConfigError naming ``where`` otherwise."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a size such as 8GB, 512MiB or a number of bytes, got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        m = _SIZE.fullmatch(str(value).lower())
        if m is None or m.group(2) not in _UNITS:
            raise ConfigError(f"{where}: cannot read {value!r} as a size (use e.g. 8GB, 512MiB, 2e9 bytes)")
        number, unit = float(m.group(1)), m.group(2)
    if number < 0 or number != number or number == float("inf"):
        raise ConfigError(f"{where}: a size must be a finite number >= 0, got {value!r}")
    return int(round(number * _UNITS[unit]))


def format_bytes(n: int | float) -> str:
    """``n`` bytes in decimal units with three significant figures or so: 1.9 GB, 61.4 MB, 512 B."""
    n = float(n)
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"

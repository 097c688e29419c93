"""Byte sizes from config strings: decimal and binary units, numbers, and clear refusals."""

from __future__ import annotations

import pytest

from bitseek.errors import ConfigError
from bitseek.utils.sizes import format_bytes, parse_bytes


@pytest.mark.parametrize("text,expected", [
    ("8GB", 8 * 10**9), ("8 gb", 8 * 10**9), ("1.5G", 1_500_000_000), ("512MiB", 512 * 2**20),
    ("2GiB", 2 * 2**30), ("100kB", 100_000), ("123", 123), ("2e9", 2 * 10**9), ("0", 0), (0, 0),
    (4096, 4096), (1.5e3, 1500), ("1TB", 10**12), ("7b", 7),
])
def test_sizes_parse(text, expected):
    assert parse_bytes(text, "data.ram_budget") == expected


@pytest.mark.parametrize("bad", ["8XB", "GB", "", "eight", "-1GB", "1,5GB", True, -3, float("inf")])
def test_bad_sizes_name_the_field(bad):
    with pytest.raises(ConfigError, match=r"^data\.ram_budget: ") as e:
        parse_bytes(bad, "data.ram_budget")
    assert "\n" not in str(e.value)


def test_format_bytes():
    assert format_bytes(18_670_000_000) == "18.7 GB"
    assert format_bytes(61_440_000) == "61.4 MB"
    assert format_bytes(512) == "512 B"
    assert format_bytes(2_500) == "2.5 kB"

"""`bitseek list KIND` for every registry, and the packaged configs."""

from __future__ import annotations

import pytest

from bitseek.cli.main import main


@pytest.mark.parametrize("kind, expected", [
    ("models", {"conmh", "wsch", "csce", "itq"}),
    ("datasets", {"fcvid", "activitynet", "cifar10"}),
    ("backbones", {"resnet50", "resnet-mini"}),
    ("converters", {"conmh", "wsch", "csce"}),
    ("configs", {"conmh/fcvid-64", "csce/imagenet100-64", "itq/fcvid-64"}),
])
def test_list_every_kind(kind, expected, capsys):
    assert main(["list", kind]) == 0
    names = set(capsys.readouterr().out.split())
    assert expected <= names


@pytest.mark.parametrize("kind", ["engines", "rerankers"])
def test_list_engines_and_rerankers_parse(kind, capsys):
    assert main(["list", kind]) == 0


def test_list_verbose_gives_a_description(capsys):
    assert main(["list", "converters", "-v"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("csce"))
    assert "CSCENet" in line

"""YAML alias expansion is bounded ("billion laughs"); ordinary documents load as with yaml.safe_load."""

from __future__ import annotations

import time

import pytest
import yaml

from bitseek.safe_yaml import AliasBombError, safe_load


def laughs(levels: int) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels + 1):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    lines.append(f"name: *a{levels}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("levels", [7, 10, 30])
def test_billion_laughs_is_refused_quickly(levels):
    t0 = time.perf_counter()
    with pytest.raises(AliasBombError, match="aliases expand to more than"):
        safe_load(laughs(levels))
    assert time.perf_counter() - t0 < 1.0


def test_modest_aliases_are_fine():
    text = "base: &b {lr: 0.1, betas: [0.9, 0.99]}\nrun1: *b\nrun2: *b\n"
    assert safe_load(text) == yaml.safe_load(text)
    assert safe_load(laughs(3)) == yaml.safe_load(laughs(3))  # 9**4 nodes: under the bound


def test_recursive_alias_is_refused():
    with pytest.raises(AliasBombError, match="recursive"):
        safe_load("a: &x [1, *x]\n")


def test_same_results_as_safe_load_and_still_safe():
    for text in ("", "x: 1\n", "- 1\n- [2, 3]\n", "k: {a: null, b: 2.5, c: 'x'}\n"):
        assert safe_load(text) == yaml.safe_load(text)
    with pytest.raises(yaml.YAMLError):
        safe_load("!!python/object/apply:os.system ['true']\n")

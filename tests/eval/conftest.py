"""Shared helpers for the evaluator tests: the reference oracles and the revisitop fixtures."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "revisitop"


@pytest.fixture(scope="session")
def ref() -> ModuleType:
    """The literal reference ports (loaded by path: tests run with --import-mode=importlib)."""
    spec = importlib.util.spec_from_file_location("bitseek_eval_reference_ports", Path(__file__).with_name("reference_ports.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def gnd_path(name: str) -> Path:
    p = FIXTURES / f"gnd_{name}.pkl"
    if not p.is_file():
        pytest.skip(f"revisitop fixture {p} not available")
    return p


@pytest.fixture(params=["roxford5k", "rparis6k"])
def gnd_file(request) -> Path:
    return gnd_path(request.param)

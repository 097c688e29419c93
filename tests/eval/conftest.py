"""Shared helpers for the evaluator tests: the reference oracles and the revisitop fixtures."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest



@pytest.fixture(scope="session")
def ref() -> ModuleType:
    """The literal reference ports (loaded by path: tests run with --import-mode=importlib)."""
    spec = importlib.util.spec_from_file_location("bitseek_eval_reference_ports", Path(__file__).with_name("reference_ports.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(params=["roxford5k", "rparis6k"])
def gnd_file(request, shared_fixture_path) -> Path:
    """The real revisitop ground truth from the shared folder (see tests/conftest.py)."""
    return shared_fixture_path("revisitop", f"gnd_{request.param}.pkl")

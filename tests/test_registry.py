"""The one Registry class: every kind, scoped registration, loud failures of built-in modules."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest

from bitseek.errors import ConfigError
from bitseek.registry import BACKBONES, CONVERTERS, DATASETS, ENGINES, MODELS, REGISTRIES, RERANKERS, Registry


@dataclass
class _Cfg:
    name: str = "x"
    size: int = 3


def test_every_kind_is_one_registry_class():
    assert set(REGISTRIES) == {"models", "datasets", "backbones", "converters", "engines", "rerankers"}
    for reg in (MODELS, DATASETS, BACKBONES, CONVERTERS, ENGINES, RERANKERS):
        assert type(reg) is Registry


def test_builtin_entries():
    assert {"conmh", "wsch", "csce", "itq", "lsh", "pcah", "sh"} <= set(MODELS.names())
    assert {"resnet50", "resnet-mini"} <= set(BACKBONES.names())
    # CSCE-Net's released layout has a registered converter beside ConMH's and WSCH's
    assert {"conmh", "wsch", "csce"} <= set(CONVERTERS.names())
    assert CONVERTERS.get("csce").module == "bitseek.models.csce"
    assert CONVERTERS.get("conmh").module == "bitseek.models.conmh"


def test_config_and_create_with_and_without_config_class():
    reg = Registry("thing")
    reg.register("cfgd", _Cfg)(lambda cfg: ("built", cfg.size))
    reg.register("plain")(lambda width=1: ("plain", width))
    assert reg.config("cfgd", size=5) == _Cfg("cfgd", 5)
    assert reg.create("cfgd", size=7) == ("built", 7)
    assert reg.create(_Cfg("cfgd", 2)) == ("built", 2)
    assert reg.create("plain", width=4) == ("plain", 4)
    with pytest.raises(ConfigError, match="unknown key 'sise'; did you mean 'size'"):
        reg.config("cfgd", sise=1)
    with pytest.raises(ConfigError, match="unknown thing 'cfgx'; did you mean 'cfgd'"):
        reg.get("cfgx")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("plain")(lambda: None)


def test_scoped_registration_restores_the_table():
    before = MODELS.names()
    with MODELS.registered("scoped-model", lambda cfg: cfg, _Cfg) as entry:
        assert "scoped-model" in MODELS and entry.config_cls is _Cfg
    assert MODELS.names() == before
    reg = Registry("thing")
    reg.add("a", print)
    reg.unregister("a")
    assert "a" not in reg
    with pytest.raises(KeyError):
        reg.unregister("a")


def test_names_filter_by_pattern_and_module():
    assert MODELS.names("c*") == ["conmh", "csce", "cvnet", "cvnet-global", "cvnet-rerank"]
    assert MODELS.names(module="bitseek.models.shallow") == ["itq", "lsh", "pcah", "sh"]


def test_builtin_module_that_fails_to_import_is_an_error_every_time():
    reg = Registry("thing", ("bitseek.no_such_builtin_module",))
    for _ in range(2):  # not marked loaded after a failure: a retry fails again, never a shorter table
        with pytest.raises(ImportError, match="built-in thing module bitseek.no_such_builtin_module"):
            reg.names()


def test_builtin_module_with_a_broken_import_inside_is_an_error(tmp_path, monkeypatch):
    pkg = tmp_path / "brokenpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import bitseek_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("thing", ("brokenpkg",))
    with pytest.raises(ImportError, match="bitseek_missing_dependency"):
        reg.names()


def test_no_config_registry_import_cycle():
    """Each of the two imports first, in a fresh interpreter, works."""
    for first in ("bitseek.registry", "bitseek.config", "bitseek.config.typed", "bitseek.config.experiment"):
        code = f"import {first}; from bitseek.config import load_config, from_dict; from bitseek.registry import MODELS"
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    code = "import sys, bitseek.config.typed as t; assert 'bitseek.registry' not in sys.modules, sorted(sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

"""Progress bars are drawn on a terminal only, never with --quiet; --quiet/--verbose set log levels."""

from __future__ import annotations

import io
import logging

import pytest

from bitseek import progress as P
from bitseek.cli.main import main


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _reset():
    yield
    P.configure(quiet=False)
    P.setup_logging(0)


def test_bar_only_on_a_terminal(monkeypatch):
    monkeypatch.delenv("BITSEEK_PROGRESS", raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not P.enabled() and P.progress(range(3)).disable
    tty = _Tty()
    monkeypatch.setattr("sys.stderr", tty)
    assert P.enabled()
    assert list(P.progress(range(50), desc="unit-test")) == list(range(50))
    assert "unit-test" in tty.getvalue()
    P.configure(quiet=True)
    assert not P.enabled() and P.progress(range(3)).disable
    P.configure(quiet=False)
    monkeypatch.setenv("BITSEEK_PROGRESS", "0")
    assert not P.enabled()
    assert P.progress(range(3), show=False).disable


def test_quiet_and_verbose_set_the_log_level(capsys):
    assert main(["--quiet", "list", "models"]) == 0
    assert logging.getLogger("bitseek").level == logging.ERROR and not P.enabled()
    assert main(["list", "models", "-q"]) == 0  # after the command too
    assert logging.getLogger("bitseek").level == logging.ERROR
    assert main(["--verbose", "list", "models"]) == 0
    assert logging.getLogger("bitseek").level == logging.DEBUG
    assert main(["list", "models"]) == 0
    assert logging.getLogger("bitseek").level == logging.INFO


def test_training_draws_a_bar_on_a_terminal_and_none_when_quiet(toy_raw, monkeypatch):
    from bitseek.config import load_config
    from bitseek.data.base import load_data
    from bitseek.registry import create_model
    from bitseek.train import Trainer

    tty = _Tty()
    monkeypatch.setattr("sys.stderr", tty)
    monkeypatch.delenv("BITSEEK_PROGRESS", raising=False)
    raw = {**toy_raw, "train": {**toy_raw["train"], "progress": True}}
    cfg = load_config(raw=raw)
    Trainer(create_model(cfg.model), cfg, load_data(cfg.data)).fit()
    assert "train toy" in tty.getvalue() and "step" in tty.getvalue()
    quiet = _Tty()
    monkeypatch.setattr("sys.stderr", quiet)
    P.configure(quiet=True)
    raw["train"]["out_dir"] += "-q"
    cfg = load_config(raw=raw)
    Trainer(create_model(cfg.model), cfg, load_data(cfg.data)).fit()
    assert quiet.getvalue() == ""

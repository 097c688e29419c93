"""Issue 11 item 19: every line of the README's "Using it" block runs as written, in order, in an empty
folder (on the built-in benchmark's real-format files, made small for the test); no README link is broken."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from bitseek.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")

#: appended to every config-taking line: a small benchmark and two optimiser steps (later overrides win)
QUICK = ["train.epochs=1", "train.max_steps_per_epoch=2", "data.batch_size=32"]
QUICK_BENCH = ["data.n_train=128", "data.n_query=20", "data.n_db=120"]


def using_it_lines() -> list[str]:
    section = README.split("## Using it", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the Using it section has no ```bash block"
    return [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_using_it_runs_as_written_in_an_empty_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    lines = using_it_lines()
    assert len(lines) >= 8 and all(ln.startswith("bitseek ") for ln in lines)
    for line in lines:
        argv = shlex.split(line, comments=True)[1:]
        if "--config" in argv:
            argv += QUICK + (QUICK_BENCH if "mnist-video" in line else [])
        rc = main(argv)
        out = capsys.readouterr()
        assert rc == 0, f"{line!r} exited {rc}: {out.err[-500:]}"
    for made in ("bench/train_feats.h5", "bench/q_label.mat", "bench/re_label.mat", "db.codes", "q.codes",
                 "db.index", "runs/conmh-mnist-video-64/eval/metrics.json", "runs/itq-mnist-video-64/model",
                 "runs/conmh-activitynet-64/model"):
        assert (tmp_path / made).exists(), made


def test_every_relative_link_in_the_readme_exists():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [ln for ln in links if not re.match(r"^[a-z]+://", ln)]
    assert local
    missing = [ln for ln in local if not (ROOT / ln).exists()]
    assert missing == []


@pytest.mark.parametrize("recipe", re.findall(r"--config ((?:conmh|itq|wsch|csce)/[\w.-]+)", README))
def test_every_recipe_the_readme_names_is_packaged(recipe):
    from bitseek.config import resolve_config_path

    assert resolve_config_path(recipe).is_file()

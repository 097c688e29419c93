"""Smoke test of ``bitseek demo`` (video) in its quick mode: the whole flow, tiny settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("mlxtend")

from bitseek.cli.main import main  # noqa: E402
from bitseek.demo import video  # noqa: E402


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("video-demo")
    video.run_video_demo(out, quick=True)
    return out


def test_metrics_json(demo_out):
    doc = json.loads((demo_out / "metrics.json").read_text())
    rows = doc["results"]
    methods = {r["method"] for r in rows}
    assert methods == {"lsh", "pcah", "itq", "conmh", "wsch"}
    assert {r["metric"] for r in rows} == {f"mAP@{k}" for k in (5, 10, 20, 40, 60, 80, 100)}
    assert all(r["dataset"] == "mnist-video" and r["bits"] == 16 and 0.0 <= r["value"] <= 1.0 for r in rows)
    assert doc["wall_time_s"] > 0 and doc["quick"] is True
    assert set(doc["config"]) == {f"{m}-16" for m in methods}
    assert doc["search"]["k"] == 100


def test_report_and_plots(demo_out):
    report = (demo_out / "report.md").read_text()
    assert "| conmh |" in report and "mAP@20" in report
    for png in ("map_at_k.png", "pr_16bits.png", "retrievals_conmh16.png"):
        assert (demo_out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_resume_instead_of_retraining(demo_out):
    for m in ("conmh", "wsch"):
        assert (demo_out / "runs" / f"{m}-16" / "DONE").exists()
        assert (demo_out / "runs" / f"{m}-16" / "model" / "model.safetensors").exists()


def test_real_settings_untouched():
    assert video.BITS == (16, 32, 64)
    from bitseek.config import load_config
    from bitseek.demo.common import config_path

    cfg = load_config(config_path("conmh-mnist-video.yaml"))
    assert cfg.train.max_steps_per_epoch == 0


def test_cli_routes_demo(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(video, "run_video_demo", lambda out, **kw: seen.update(out=out, **kw))
    assert main(["demo", "--out", str(tmp_path), "--seed", "3"]) == 0
    assert seen == {"out": tmp_path, "full": False, "seed": 3, "train_scale": None}
    assert main(["demo", "--out", str(tmp_path), "--train-scale", "10"]) == 0
    assert seen["train_scale"] == 10
    with pytest.raises(SystemExit):
        main(["demo", "--train-scale", "0"])


def test_epochs_scale():
    from bitseek.demo.common import deep_config, epochs_scale

    assert (epochs_scale(False, None), epochs_scale(True, None), epochs_scale(True, 10)) == (1, 3, 10)
    cfg = deep_config("conmh-mnist-video.yaml", "conmh", 16, "mnist-video", Path("/tmp/x"), [], 0, 10)
    assert cfg.train.epochs == 200

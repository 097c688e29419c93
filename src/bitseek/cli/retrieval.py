"""``bitseek retrieval test``: CVNet's ``python test.py MODEL.DEPTH 50 TEST.WEIGHTS … TEST.DATA_DIR …``.

For each dataset of ``TEST.DATASET_LIST``: multi-scale global descriptors of the (cropped) queries
and the database (:mod:`bitseek.encode.multiscale`, the official protocol), cached on disk
(:mod:`bitseek.encode.revisited_cache`, resumable); inner-product ranking; Easy/Medium/Hard mAP
in revisitop's print format; then, per ``TEST.TOPK_LIST`` entry, the re-ranked ranking of a
re-ranker from ``registry.RERANKERS`` and its mAP. ``--plus1m`` appends revisitop's distractors
after the database. ``--first-stage itq:BITS`` puts bitseek's binary first stage in front of the
re-ranker (:mod:`bitseek.rerank.binary`: ITQ codes -> Hamming top-L -> float re-scoring) and
reports its mAP, bytes per image and cost against the exact float search. Everything printed is
also written as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from bitseek.cli.common import non_negative_int, positive_int
from bitseek.errors import ConfigError, FileFormatError

log = logging.getLogger(__name__)

RERANK_CHOICES = ("cvnet", "superglobal", "none")
FIRST_STAGE_HELP = "float (exact inner product, as the official test) or itq:BITS (BITS a positive multiple of 8)"


def first_stage(text: str) -> tuple[str, int]:
    """``--first-stage`` value -> ("float", 0) or ("itq", bits); argparse type (bad values exit 2)."""
    t = text.strip().lower()
    if t == "float":
        return "float", 0
    kind, _, bits = t.partition(":")
    if kind == "itq" and bits.isdigit() and int(bits) > 0 and int(bits) % 8 == 0:
        return "itq", int(bits)
    raise argparse.ArgumentTypeError(f"--first-stage: {text!r} is not {FIRST_STAGE_HELP}, e.g. itq:256")
NEEDS_MAPS = {"cvnet"}  # re-rankers that read the stage-3 maps (the others need only the descriptors)


# --------------------------------------------------------------------------- the model


def load_cvnet(weights: str, depth: int, reduction_dim: int, *, seed: int = 0,
               allow_pickle: bool = False) -> tuple[Any, dict[str, Any]]:
    """CVNet from ``TEST.WEIGHTS`` (official .pyth, a bitseek checkpoint folder, or ``random``) and its
    description ``{"weights", "random", "id"}``; the id keys the feature cache."""
    import torch

    from bitseek.registry import MODELS

    cfg = MODELS.config("cvnet", depth=depth, reduction_dim=reduction_dim)
    if weights == "random":
        torch.manual_seed(seed)
        model = MODELS.create(cfg)
        return model.eval(), {"weights": "random", "random": True, "seed": seed,
                              "id": f"random-seed{seed}-R{depth}-{reduction_dim}"}
    if not weights:
        raise ConfigError("TEST.WEIGHTS is required: an official .pyth file, a bitseek checkpoint folder "
                          "(bitseek convert --out), or 'random' (untrained, for tests)")
    from bitseek.weights import sha256_file

    p = Path(weights).expanduser()
    if p.is_file() and p.name == "model.safetensors":
        p = p.parent
    if p.is_dir():
        from bitseek.train.checkpoint import load_model
        from bitseek.weights import read_model_config

        meta = read_model_config(p)
        m = meta.get("model", {})
        if m.get("name") != "cvnet":
            raise ConfigError(f"TEST.WEIGHTS: {p} holds a {m.get('name')!r} model, not CVNet")
        if int(m.get("depth", 0)) != depth or int(m.get("reduction_dim", 2048)) != reduction_dim:
            raise ConfigError(f"TEST.WEIGHTS: {p} is a ResNet-{m.get('depth')} CVNet; run with "
                              f"MODEL.DEPTH {m.get('depth')}")
        model = load_model(p)
        wfile = p / "model.safetensors"
    elif p.is_file():
        from bitseek.models.convert import load_official

        try:
            model = load_official(p, cfg, allow_pickle=allow_pickle)
        except FileFormatError as e:
            raise FileFormatError(str(e) if str(p) in str(e) else f"{p}: {e}") from None
        wfile = p
    else:
        raise ConfigError(f"TEST.WEIGHTS: no such file or checkpoint folder {p}")
    return model.eval(), {"weights": str(p), "random": False, "id": f"sha256:{sha256_file(wfile)}"}


# --------------------------------------------------------------------------- one dataset


def _search(X: np.ndarray, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``sim = X Qᵀ`` and ``ranks = argsort(-sim, axis=0)``, exactly as the official test ranks."""
    sim = X @ Q.T
    return sim, np.argsort(-sim, axis=0)


def _results_json(res: dict[str, Any]) -> dict[str, Any]:
    return {p: {"map": r.map, "mp@k": {str(k): v for k, v in r.mp_at_k.items()}, "map_raw": r.map_raw,
                "n_evaluated": r.n_evaluated} for p, r in res.items()}


def _distractor_map_rows(ranks: np.ndarray, n_db: int, ks: list[int], mode: str, gnd: Any) -> list[int]:
    """Distractor rows (0-based among the distractors) that reach any shortlist: only their maps are needed."""
    from bitseek.rerank.shortlist import shortlists

    need: set[int] = set()
    for k in ks:
        for lists in shortlists(ranks, k, mode, gnd).values():
            for i, pos in enumerate(lists):
                idx = ranks[pos, i]
                need.update(int(j) - n_db for j in idx[idx >= n_db])
    return sorted(need)


def _binary_stage(name: str, Q: np.ndarray, X: np.ndarray, full_ranks: np.ndarray, gnd: Any, bits: int,
                  args: argparse.Namespace, k: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """ITQ (fitted on the database) -> Hamming top-L -> float re-scoring: its rank-aligned (ranks,
    scores), which the re-ranker then takes, and the report of what it costs against ``full_ranks``."""
    from bitseek.eval.revisited import evaluate, format_results
    from bitseek.rerank.binary import binary_first_stage, first_stage_summary

    stage = binary_first_stage(Q, X, bits=bits, shortlist=args.first_stage_depth, seed=args.seed)
    rep = {"kind": "itq", **first_stage_summary(stage, full_ranks, X, gnd, k=k)}
    b = rep["bytes_per_image"]
    print(f">> {name}: first stage itq:{stage.bits}: Hamming top-{stage.shortlist}, re-scored by the float "
          f"descriptor ({b['binary_code']} bytes/image in the index, {b['float_descriptor']} read per "
          f"candidate); recall of the exact top-{rep['recall_at_k']['k']}: {rep['recall_at_k']['recall']:.3f}",
          flush=True)
    print(format_results(evaluate(stage.ranks, gnd), name), flush=True)
    cost = rep["cost"]["vs_float_full"]
    print(f">> {name}: mAP cost of the binary first stage vs exact float search: "
          + ", ".join(f"{p[0].upper()}: {cost[p]:+.2f}" for p in cost), flush=True)
    return stage.ranks, stage.scores, rep


def run_dataset(name: str, cfg: Any, model: Any, model_id: str, args: argparse.Namespace,
                distractors: tuple[list[Path], list[str]] | None, device: Any) -> dict[str, Any]:
    from bitseek.data.revisited import read_bgr, revisitop_images
    from bitseek.encode.multiscale import MultiScaleImages
    from bitseek.encode.revisited_cache import ConcatMaps, FeatureCache
    from bitseek.eval.revisited import evaluate, format_results

    imgs = revisitop_images(cfg.data_dir, name)
    gnd = imgs.gnd
    cache = Path(args.cache)
    show = not args.quiet
    q_ims = MultiScaleImages(lambda i: read_bgr(imgs.query[i]), len(imgs.query), cfg.scale_list, imgs.boxes,
                             args.crop)
    db_ims = MultiScaleImages(lambda i: read_bgr(imgs.database[i]), len(imgs.database), cfg.scale_list)
    common = dict(device=device, num_workers=args.workers, show_progress=show)

    def cached(split: str, kind: str, ims: MultiScaleImages, names: list[str], rows: Any = None) -> FeatureCache:
        c = FeatureCache(cache, split, kind, ims, names, model_id, rows=rows, chunk=args.chunk)
        return c.extract(model, desc=f"{split} {kind}", **common)

    print(f">> {name}: global retrieval for scale {list(cfg.scale_list)} with CVNet-Global "
          f"(query crop: {args.crop})", flush=True)
    Q = cached(f"{name}-query", "global", q_ims, gnd["qimlist"]).global_descriptors()
    X = cached(f"{name}-db", "global", db_ims, gnd["imlist"]).global_descriptors()
    n_db = len(X)
    d_ims = None
    if distractors is not None:
        dpaths, dnames = distractors
        d_ims = MultiScaleImages(lambda i: read_bgr(dpaths[i]), len(dpaths), cfg.scale_list)
        X = np.concatenate([X, cached("revisitop1m", "global", d_ims, dnames).global_descriptors()])
    sim, ranks = _search(X, Q)
    res = evaluate(ranks, gnd)
    print(format_results(res, name), flush=True)
    out: dict[str, Any] = {"n_query": len(Q), "n_db": n_db, "n_distractors": len(X) - n_db,
                           "global": _results_json(res), "rerank": []}
    from bitseek.rerank import RerankInputs, build_reranker, ranked_scores, rerank_ranks

    kind, bits = getattr(args, "first_stage", ("float", 0))
    if kind == "itq":
        ranks, scores, out["first_stage"] = _binary_stage(name, Q, X, ranks, gnd, bits, args, max(cfg.topk_list))
    else:
        scores = None
        out["first_stage"] = {"kind": "float"}
    if args.rerank == "none":
        return out

    inputs = RerankInputs(model=model, query_global=Q, db_global=X)
    if args.rerank in NEEDS_MAPS:
        # each image's convolved re-rank pyramid (fp16), so only correlation + 4D convs run per pair
        inputs.query_maps = cached(f"{name}-query", "pyramid", q_ims, gnd["qimlist"]).maps()
        db_maps = cached(f"{name}-db", "pyramid", db_ims, gnd["imlist"]).maps()
        if d_ims is not None:
            rows = _distractor_map_rows(ranks, n_db, cfg.topk_list, args.shortlist, gnd)
            inputs.db_maps = ConcatMaps([db_maps, cached("revisitop1m", "pyramid", d_ims, distractors[1],  # type: ignore[index]
                                                         rows=rows).maps()])
        else:
            inputs.db_maps = db_maps
    reranker = build_reranker(args.rerank, inputs)
    if scores is None:
        scores = ranked_scores(sim, ranks)
    for k in cfg.topk_list:
        from bitseek.progress import progress

        bar = progress(total=len(Q), desc=f"{name} re-rank top-{k}", unit="query", show=show)
        rr = rerank_ranks(ranks, scores, reranker, mode=args.shortlist, k=k, gnd=gnd,
                          progress=lambda i, n: bar.update(1))
        bar.close()
        rres = evaluate(rr.ranks, gnd)
        print(f">> {name}: {rr.describe()}", flush=True)
        print(format_results(rres, name), flush=True)
        out["rerank"].append({**rr.to_json(), "results": _results_json(rres)})
    return out


# --------------------------------------------------------------------------- the command


def cmd_test(args: argparse.Namespace) -> int:
    import torch

    from bitseek.atomic import atomic_write_text
    from bitseek.config.foreign import cvnet_test_config
    from bitseek.device import resolve_device
    from bitseek.encode.multiscale import check_scales, import_cv2

    cfg = cvnet_test_config(list(args.overrides))
    check_scales(cfg.scale_list)
    if not cfg.data_dir:
        raise ConfigError("TEST.DATA_DIR is required: the folder holding roxford5k/ and rparis6k/ "
                          "(each with gnd_<name>.pkl and jpg/)")
    if args.rerank in NEEDS_MAPS and 1.0 not in cfg.scale_list:
        log.info("re-rank maps are taken at scale 1.0 (as the official test), whatever TEST.SCALE_LIST says")
    import_cv2()  # before any work: the protocol cannot run without OpenCV
    from bitseek.data.revisited import read_distractors

    distractors = None
    if args.plus1m:
        paths = read_distractors(args.plus1m)
        base = paths[0].parent
        distractors = (paths, [str(p.relative_to(base)) if p.is_relative_to(base) else str(p) for p in paths])
    model, wdesc = load_cvnet(cfg.weights, cfg.depth, cfg.reduction_dim, seed=args.seed,
                              allow_pickle=args.allow_pickle)
    if cfg.gemp or cfg.rgem or cfg.sgem or cfg.relup:  # SuperGlobal's SupG.* pooling: no weights, any checkpoint
        from bitseek.models.cvnet import superglobal_config

        sg = superglobal_config(cfg.depth, gemp=cfg.gemp, rgem=cfg.rgem, sgem=cfg.sgem, relup=cfg.relup)
        model.set_pooling(**{f: getattr(sg, f) for f in model.POOLING_FIELDS})
        wdesc["id"] += "-" + model.pooling_id()  # its own feature cache
    if wdesc["random"]:
        print(f"WEIGHTS: random (seed {args.seed}) -- an untrained network: these numbers say nothing about "
              "CVNet's accuracy", flush=True)
    device = resolve_device(args.device)
    model.to(device)
    report: dict[str, Any] = {
        "overrides": list(args.overrides),
        "model": {"name": "cvnet", "depth": cfg.depth, "reduction_dim": cfg.reduction_dim,
                  "pooling": model.pooling_id() or "cvnet"},
        "weights": wdesc, "scales": list(cfg.scale_list), "query_crop": args.crop, "rerank": args.rerank,
        "shortlist_mode": args.shortlist if args.rerank != "none" else None, "topk": list(cfg.topk_list),
        "first_stage": "float" if args.first_stage[0] == "float" else f"itq:{args.first_stage[1]}",
        "first_stage_depth": args.first_stage_depth if args.first_stage[0] == "itq" else None,
        "plus1m": str(args.plus1m) if args.plus1m else None, "device": str(device),
        "torch": torch.__version__, "opencv": import_cv2().__version__, "datasets": {},
    }
    t0 = time.perf_counter()
    with torch.no_grad():
        for name in cfg.dataset_list:
            report["datasets"][name] = run_dataset(name, cfg, model, wdesc["id"], args, distractors, device)
    report["seconds"] = round(time.perf_counter() - t0, 3)
    atomic_write_text(args.out, json.dumps(report, indent=1))
    print(f"results -> {args.out}")
    return 0


def register(sub: Any) -> None:
    """Add ``retrieval test`` to the main parser's sub-commands."""
    help_ = "landmark retrieval on Revisited Oxford/Paris (CVNet's test in its own shape)"
    grp = sub.add_parser("retrieval", help=help_, description=help_)
    cmds = grp.add_subparsers(dest="retrieval_command", metavar="COMMAND", required=True)
    help_ = ("CVNet's test: python test.py MODEL.DEPTH 50 TEST.WEIGHTS <ckpt> TEST.DATA_DIR <dir> "
             "[TEST.DATASET_LIST ...] [TEST.SCALE_LIST ...] [TEST.TOPK_LIST ...]")
    sp = cmds.add_parser("test", help=help_, description=help_)
    sp.set_defaults(func=cmd_test, parser=sp)
    sp.add_argument("overrides", nargs="*", metavar="KEY VALUE",
                    help="the official yacs keys: MODEL.DEPTH, TEST.WEIGHTS (.pyth, a bitseek checkpoint folder, "
                         "or 'random'), TEST.DATA_DIR, TEST.DATASET_LIST, TEST.SCALE_LIST, TEST.TOPK_LIST; "
                         "SuperGlobal's SupG.gemp / SupG.rgem / SupG.sgem / SupG.relup True|False (default False)")
    sp.add_argument("--plus1m", default=None, metavar="DIR",
                    help="append revisitop's +1M distractors (DIR holds revisitop1m.txt and jpg/)")
    sp.add_argument("--rerank", choices=RERANK_CHOICES, default="cvnet",
                    help="re-ranker after the global search (default cvnet, as the official test)")
    sp.add_argument("--first-stage", type=first_stage, default=("float", 0), metavar="float|itq:BITS",
                    help="the search before re-ranking: " + FIRST_STAGE_HELP + "; itq ranks by Hamming "
                         "distance of ITQ codes fitted on the database, keeps --first-stage-depth images and "
                         "re-scores them by the float descriptor (default float)")
    sp.add_argument("--first-stage-depth", type=positive_int, default=1000, metavar="L",
                    help="images the Hamming search keeps per query (itq only; default 1000)")
    sp.add_argument("--shortlist", choices=("gnd", "plain"), default="gnd",
                    help="gnd: the official ground-truth-aware top-K (junk skipped, hard/easy excluded per "
                         "protocol); plain: the first K of the ranking, no ground truth")
    sp.add_argument("--crop", choices=("truncate", "round"), default="truncate",
                    help="query box rule: truncate (CVNet's int()) or round (revisitop's PIL crop)")
    sp.add_argument("--cache", default="cvnet-cache", metavar="DIR",
                    help="feature cache folder (chunked, resumable; keyed by weights and settings)")
    sp.add_argument("--chunk", type=positive_int, default=256, metavar="N", help="images per cache chunk")
    sp.add_argument("--out", default="cvnet-test.json", metavar="FILE", help="JSON results file")
    sp.add_argument("--seed", type=int, default=0, help="seed of TEST.WEIGHTS random")
    sp.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    sp.add_argument("--workers", type=non_negative_int, default=0, help="image-decoding worker processes")
    sp.add_argument("--allow-pickle", action="store_true",
                    help="load a .pyth holding pickled objects that weights-only loading refuses; this runs any "
                         "code the file carries, so use it only for files from a source you trust")
    sp.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")


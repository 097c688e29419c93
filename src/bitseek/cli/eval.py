"""The ``encode``, ``eval``, ``eval-codes`` and ``eval-ranks`` commands.

``eval`` encodes with a trained model and scores under the configured protocol, saving what it
scored; ``eval-codes`` scores saved codes or feature files (so a run's saved outputs reproduce its
numbers); ``eval-ranks`` scores rank matrices made anywhere (a re-ranker, another toolkit) under
the Revisited Oxford/Paris protocol, one matrix for all protocols or one per protocol.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bitseek.cli.common import int_list as _int_list
from bitseek.cli.common import load_cfg as _load_cfg
from bitseek.cli.common import load_npy as _load_npy
from bitseek.cli.common import print_rows as _print_rows
from bitseek.errors import BitseekError

AddCommand = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def read_outputs(path: str, kind: str = "auto") -> tuple[str, np.ndarray]:
    """``(kind, rows)`` from a CodeSet (``.codes``), a FeatureSet (``.feats``) or a ``.npy`` array.

    CodeSets come back in the form the evaluator ranks exactly (signed when they hold ternary
    zeros); FeatureSets are verified (every row byte checked) before they are scored.
    """
    from bitseek.codes import CodeSet, FeatureSet

    p = Path(path)
    if p.suffix == ".npy":
        what = "features" if kind == "features" else "codes"
        a = _load_npy(path, what)
        if a.ndim != 2:
            raise BitseekError(f"{path}: {what} must be a 2-D (n, {'dim' if kind == 'features' else 'bits'}) "
                               f"array, got shape {a.shape}")
        return what, a
    if p.suffix == ".feats" or kind == "features":
        return "features", FeatureSet.load(p).float32()
    return "codes", CodeSet.load(p).for_eval()


def read_labels(path: str, key: str | None) -> np.ndarray:
    """Labels from a ``.npy`` array or a ``.mat`` variable (``key``; default its only variable)."""
    if path.endswith(".npy"):
        return _load_npy(path, "labels")
    if path.endswith(".mat"):
        from bitseek.data.matlabels import load_label_matrix

        return load_label_matrix(path, key)
    raise BitseekError(f"{path}: labels must be a .npy or .mat file")


def _check_out(path: str | None) -> None:
    if path and Path(path).is_dir():
        raise BitseekError(f"--out {path}: is a folder; give a file name for the metrics JSON")


# --------------------------------------------------------------------------- commands


def cmd_eval(args: argparse.Namespace) -> int:
    from bitseek import pipeline
    from bitseek.data.base import load_data

    cfg = _load_cfg(args)
    data = load_data(cfg.data)
    model = pipeline.load_trained(cfg, args.checkpoint)
    out = Path(args.out) if args.out else cfg.out_dir / "eval"
    rows = pipeline.evaluate(cfg, model, data, out_dir=out)
    _print_rows(rows)
    print(f"metrics -> {out / 'metrics.json'}")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from bitseek import pipeline
    from bitseek.data.base import load_data
    from bitseek.encode import extract, save_extracted

    cfg = _load_cfg(args)
    shard = None
    if args.shard is not None:
        from bitseek.encode.shards import parse_shard

        shard = parse_shard(args.shard)  # a bad flag fails before the data and the model load
    data = load_data(cfg.data)
    model = pipeline.load_trained(cfg, args.checkpoint)
    split = {"train": data.train, "query": data.query, "database": data.searched}[args.split]
    attrs: dict[str, Any] = {"model": cfg.model.name, "dataset": cfg.data.name, "split": args.split,
                             "precision": pipeline.encode_precision(cfg)}
    device = cfg.train.device
    out, ids = Path(args.out), None
    if shard is not None:
        import os

        import torch
        from torch.utils.data import Subset

        from bitseek.encode.shards import shard_path, shard_rows

        i, n = shard
        rows_of = shard_rows(len(split), i, n)  # type: ignore[arg-type]
        attrs.update(shard=f"{i}/{n}", shard_of=n, items=len(split))  # type: ignore[arg-type]
        ids = np.arange(rows_of.start, rows_of.stop, dtype=np.int64)  # global positions: shards merge as one
        split = Subset(split, rows_of)  # type: ignore[arg-type]
        out = shard_path(args.out, i, n)
        if device == "auto" and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
            device = f"cuda:{int(os.environ['LOCAL_RANK'])}"  # one GPU per torchrun rank
        if len(rows_of) == 0:
            raise BitseekError(f"--shard {i}/{n}: the {args.split} split has only {attrs['items']} items, "
                               "so this shard is empty; use fewer shards")
    kind, rows = extract(model, split, cfg.eval.batch_size, device, precision=pipeline.encode_precision(cfg),
                         progress=cfg.train.progress)
    saved = save_extracted(kind, rows, out, ids=ids, attrs=attrs, feature_dtype=args.feature_dtype)
    what = f"codes of {rows.shape[1]} bits" if kind == "codes" else f"{rows.shape[1]}-d {args.feature_dtype} features"
    print(f"{len(saved)} {what} -> {out}")
    return 0



def cmd_eval_codes(args: argparse.Namespace) -> int:
    from bitseek import pipeline
    from bitseek.config import EvalConfig
    from bitseek.data.base import GndRelevance, LabelRelevance
    from bitseek.eval.report import write_metrics_json

    _check_out(args.out)
    ks = list(args.ks)
    kind, q = read_outputs(args.query, args.kind)
    db = None
    if args.db:
        db_kind, db = read_outputs(args.db, args.kind)
        if db_kind != kind:
            raise BitseekError(f"--query holds {kind} but --db holds {db_kind}; score codes with codes, features with features")
    protocol = args.protocol
    if args.gnd:
        from bitseek.data.revisited import load_gnd

        if protocol not in ("auto", "revisited"):
            raise BitseekError(f"--gnd is the revisitop ground truth; it goes with --protocol revisited, not {protocol}")
        protocol = "revisited"
        rel: Any = GndRelevance(load_gnd(args.gnd))
    else:
        if protocol == "revisited":
            raise BitseekError("--protocol revisited needs --gnd gnd_<dataset>.pkl (the revisitop ground truth)")
        if not args.query_labels:
            raise BitseekError("--query-labels is required (or --gnd for the revisited protocol)")
        ql = read_labels(args.query_labels, args.query_label_key or args.label_key)
        dl = read_labels(args.db_labels, args.db_label_key or args.label_key) if args.db_labels else None
        if db is not None and dl is None:
            raise BitseekError("--db given without --db-labels: the database needs its own labels")
        if db is None and dl is not None:
            raise BitseekError("--db-labels given without --db: with no --db the queries are the database")
        rel = LabelRelevance(ql, dl)
        if protocol == "auto":
            protocol = "map_at_k"
    ev = EvalConfig(protocol=protocol, ks=ks, topk=args.topk, ties=args.ties)
    rows = pipeline.evaluate_outputs(kind, q, db, rel, ev, dataset=args.dataset, method=args.method)  # type: ignore[arg-type]
    _print_rows(rows)
    if args.out:
        write_metrics_json(args.out, rows, protocol=protocol, ties=args.ties, output=kind)
        print(f"metrics -> {args.out}")
    return 0


def _ranks_arg(values: list[str]) -> Any:
    """``FILE`` (one matrix for every protocol) or ``easy=FILE medium=FILE hard=FILE``."""
    from bitseek.eval.revisited import PROTOCOLS

    per: dict[str, np.ndarray] = {}
    single: np.ndarray | None = None
    for v in values:
        proto, sep, path = v.partition("=")
        if not sep:
            if single is not None or per:
                raise BitseekError("--ranks: give one FILE for all protocols, or PROTOCOL=FILE for each")
            single = _load_npy(v, "rank matrix")
            continue
        if proto not in PROTOCOLS:
            raise BitseekError(f"--ranks {v}: protocol must be one of {', '.join(PROTOCOLS)}")
        if single is not None:
            raise BitseekError("--ranks: give one FILE for all protocols, or PROTOCOL=FILE for each")
        per[proto] = _load_npy(path, "rank matrix")
    return single if single is not None else per


def cmd_eval_ranks(args: argparse.Namespace) -> int:
    from bitseek.data.revisited import load_gnd
    from bitseek.eval import revisited
    from bitseek.eval.report import write_metrics_json

    _check_out(args.out)
    ranks = _ranks_arg(args.ranks)
    protocols = tuple(ranks) if isinstance(ranks, dict) else revisited.PROTOCOLS
    if args.transpose:
        ranks = {k: v.T for k, v in ranks.items()} if isinstance(ranks, dict) else ranks.T
    kappas = list(args.kappas)
    res = revisited.evaluate(ranks, load_gnd(args.gnd), protocols=protocols, kappas=kappas)
    print(revisited.format_results(res, args.dataset))
    rows = []
    for proto, r in res.items():
        short = proto[0].upper()
        rows.append({"dataset": args.dataset, "method": args.method, "bits": 0, "metric": f"mAP-{short}", "value": r.map})
        rows += [{"dataset": args.dataset, "method": args.method, "bits": 0, "metric": f"mP@{k}-{short}", "value": v}
                 for k, v in r.mp_at_k.items()]
    if args.out:
        write_metrics_json(args.out, rows, protocol="revisited", kappas=kappas)
        print(f"metrics -> {args.out}")
    return 0


# --------------------------------------------------------------------------- parser


def register(add: AddCommand, add_config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add this group's sub-commands through ``main.build_parser``'s ``add``."""
    sp = add("eval", cmd_eval, "encode query/database with a trained model and evaluate")
    add_config_args(sp)
    sp.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the run's final model)")
    sp.add_argument("--out", default=None, help="folder for metrics.json and codes/features (default: <run>/eval)")

    sp = add("encode", cmd_encode, "encode one split into a CodeSet (hashing models) or FeatureSet (embedders)")
    add_config_args(sp)
    sp.add_argument("--split", choices=["train", "query", "database"], default="database")
    sp.add_argument("--checkpoint", default=None)
    sp.add_argument("--feature-dtype", choices=["float32", "float16"], default="float32",
                    help="storage dtype of a FeatureSet (float16 halves the file)")
    sp.add_argument("--out", required=True, help="file to write (.codes or .feats); with --shard, each shard "
                                                 "writes NAME.shard-0000i-of-0000n.EXT next to it")
    sp.add_argument("--shard", default=None, metavar="I/N",
                    help="encode only shard I of N (0-based contiguous blocks; ids stay the split's positions), "
                         "or auto: torchrun's rank/world or the SLURM array task; merge with `bitseek merge` or "
                         "give every shard to `bitseek index --codes`")

    sp = add("eval-codes", cmd_eval_codes,
             "evaluate saved codes or features (CodeSet, FeatureSet or .npy) under a protocol")
    sp.add_argument("--query", required=True, help="query codes/features (.codes, .feats, or .npy)")
    sp.add_argument("--db", default=None, help="database codes/features (default: the queries, FCVID-style)")
    sp.add_argument("--kind", choices=["auto", "codes", "features"], default="auto",
                    help="what a .npy holds (auto: codes; .feats files are always features)")
    sp.add_argument("--query-labels", default=None, help=".npy or .mat labels (multi-hot or class ids)")
    sp.add_argument("--db-labels", default=None)
    sp.add_argument("--label-key", default=None, help="variable name inside both .mat label files")
    sp.add_argument("--query-label-key", default=None, help="variable inside the query .mat (ActivityNet: q_label)")
    sp.add_argument("--db-label-key", default=None, help="variable inside the database .mat (ActivityNet: re_label)")
    sp.add_argument("--gnd", default=None, help="revisitop gnd_<dataset>.pkl: score under the revisited protocol")
    sp.add_argument("--protocol", default="auto", choices=["auto", "map_at_k", "map_at_topk", "revisited"],
                    help="auto: revisited with --gnd, else map_at_k")
    sp.add_argument("--ks", type=_int_list, default=[5, 10, 20, 40, 60, 80, 100],
                    help="comma-separated cut-offs (default 5,10,20,40,60,80,100)")
    sp.add_argument("--topk", type=int, default=0, help="map_at_topk cut-off (0 = all)")
    sp.add_argument("--ties", default="stable", choices=["stable", "numpy"])
    sp.add_argument("--dataset", default="custom")
    sp.add_argument("--method", default="codes")
    sp.add_argument("--out", default=None, help="metrics JSON file")

    sp = add("eval-ranks", cmd_eval_ranks, "evaluate rank matrices under the Revisited Oxford/Paris protocol")
    sp.add_argument("--ranks", required=True, action="append",
                    help="(n_db, n_query) .npy of database indices; PROTOCOL=FILE (repeatable) for one per protocol")
    sp.add_argument("--gnd", required=True, help="revisitop gnd_<dataset>.pkl")
    sp.add_argument("--transpose", action="store_true", help="the matrices are (n_query, n_db)")
    sp.add_argument("--kappas", type=_int_list, default=[1, 5, 10], help="mP@k cut-offs (default 1,5,10)")
    sp.add_argument("--dataset", default="")
    sp.add_argument("--method", default="ranks")
    sp.add_argument("--out", default=None, help="metrics JSON file")

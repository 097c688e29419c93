"""The data flow as functions: config -> data + model -> train -> codes or features -> evaluation rows.

Two output kinds travel the same path. Codes (``HashModel.encode``, the shallow baselines) are
ranked by Hamming distance inside the evaluator, exactly as the reference code ranks them; float
descriptors (``Embedder.embed``) are ranked by inner product with the index's ``float-ip`` engine
and scored from the ranking. The protocol comes from ``eval.protocol``; ``auto`` takes the
dataset's own (revisitop ground truth -> ``revisited``; image benchmarks -> DeepHash mAP@topK at
their cut-off; otherwise the video mAP@K).

The CLI and the demos call these; nothing here parses arguments or prints tables.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import bitseek

from bitseek.atomic import atomic_write_text
from bitseek.config import EvalConfig, ExperimentConfig, save_resolved
from bitseek.data.base import GndRelevance, LabelRelevance, Relevance, RetrievalData, load_data
from bitseek.encode import extract
from bitseek.encode.extract import save_extracted
from bitseek.errors import ConfigError, InputError
from bitseek.models.base import OutputKind, output_kind
from bitseek.models.spec import resolve_input_spec
from bitseek.registry import create_model
from bitseek.train import checkpoint as ckpt
from bitseek.train import dist
from bitseek.train.engine import Trainer, iterate_batches, seed_everything

log = logging.getLogger(__name__)

PROTOCOLS = ("auto", "map_at_k", "map_at_topk", "revisited")


def is_engine_trained(model: Any) -> bool:
    """Deep models train in the engine; the shallow baselines have a closed-form ``fit``."""
    return isinstance(model, torch.nn.Module)


is_deep = is_engine_trained  # the earlier name


def batch_features(batch: dict[str, Any]) -> np.ndarray:
    """What shallow baselines see (their own input view): pooled frame features or flattened pixels."""
    from bitseek.models.shallow import vectors

    return np.asarray(vectors(batch, "fit()").float().numpy(), dtype=np.float32)


def collect_features(dataset: Any, batch_size: int = 256) -> np.ndarray:
    from bitseek.progress import progress

    n = -(-len(dataset) // batch_size) if hasattr(dataset, "__len__") else None
    batches = progress(iterate_batches(dataset, batch_size), total=n, desc="features", unit="batch")
    return np.concatenate([batch_features(b) for b in batches])


def train(cfg: ExperimentConfig, data: RetrievalData | None = None) -> tuple[Any, RetrievalData]:
    """Train (deep: the engine; shallow: ``fit``) and return the model and its data.

    CVNet's re-ranker (``data.name=rerank-pairs``) goes through
    :func:`bitseek.train.cvnet_rerank.fit_rerank`: its pairs are mined with the network it trains."""
    if getattr(cfg.data, "name", None) == "rerank-pairs" or getattr(cfg.model, "name", None) == "cvnet-rerank":
        from bitseek.train.cvnet_rerank import fit_rerank

        model, data, _ = fit_rerank(cfg, data=data)
        return model, data
    data = data if data is not None else load_data(cfg.data)
    cfg.model = resolve_input_spec(cfg.model, data.info, cfg.data)  # fill `auto`, refuse a mismatch: before any work
    seed_everything(cfg.train.seed)
    model = create_model(cfg.model)
    if is_engine_trained(model):
        Trainer(model, cfg, data).fit()
        write_exports(model, cfg.out_dir)
        return model, data
    with dist.main_only() as me:  # under torchrun one rank fits and writes; the others wait, then load it
        if me:
            ckpt.check_run_folder(cfg.to_dict(), cfg.out_dir)  # never refit over a different run
            t0 = time.perf_counter()
            model.fit(collect_features(data.train))
            cfg.out_dir.mkdir(parents=True, exist_ok=True)
            save_resolved(cfg, cfg.out_dir)
            ckpt.save_model(cfg.out_dir / "model", model, model.cfg)
            # The engine's DONE schema ({"epochs", "steps"}): a closed-form fit is one pass.
            done = {"epochs": 1, "steps": 1, "fit_seconds": round(time.perf_counter() - t0, 3)}
            atomic_write_text(cfg.out_dir / "DONE", json.dumps(done))
    if not dist.is_main():
        model = ckpt.load_model(cfg.out_dir / "model")
    return model, data


def write_exports(model: Any, out_dir: Path) -> list[Path]:
    """Save the sub-networks a trained model hands on (``exports() -> {folder: (module, config)}``) as model folders.

    CVNet's global training exports the plain CVNet that retrieval loads (``out_dir/cvnet``)."""
    exports = getattr(model, "exports", None)
    written: list[Path] = []
    if callable(exports):
        with dist.main_only() as me:
            for name, (module, module_cfg) in exports().items():
                path = Path(out_dir) / name
                if me:
                    ckpt.save_model(path, module, module_cfg, extra={"exported_from": str(Path(out_dir) / "model")})
                written.append(path)
    return written


def load_trained(cfg: ExperimentConfig, checkpoint: str | Path | None = None) -> Any:
    """The final model of a run, or the explicit checkpoint folder given (which must exist).

    The loaded model carries ``checkpoint_info`` (path, epoch, checksum, versions) so that metrics files
    record what was scored. Only without an explicit path does a run lacking ``model/`` fall back to its
    last checkpoint, and that fallback is reported.
    """
    explicit = checkpoint or cfg.eval.checkpoint
    if explicit:
        path = Path(explicit)
        if not (path / "config.json").exists():
            flag = "--checkpoint" if checkpoint else "eval.checkpoint"
            what = "does not exist" if not path.exists() else "is not a model folder (no config.json)"
            raise ConfigError(f"{flag} {path}: {what}; give a run's model/ folder or one of its "
                              "checkpoints/epoch-N folders")
    else:
        path = cfg.out_dir / "model"
        if not (path / "config.json").exists():
            last = ckpt.last_checkpoint(cfg.out_dir)
            if last is None:
                raise ConfigError(f"no trained model at {path}; run `bitseek train` first or pass --checkpoint")
            logging.getLogger(__name__).warning("%s has no final model (training unfinished?); scoring the last "
                                                "checkpoint %s", cfg.out_dir, last)
            path = last
    model = ckpt.load_model(path)
    model.checkpoint_info = ckpt.describe_model_folder(path)
    return model


# --------------------------------------------------------------------------- encoding


def encode_precision(cfg: ExperimentConfig) -> str:
    """Precision of inference: ``eval.precision`` (fp32 unless the config chooses AMP)."""
    return str(getattr(cfg.eval, "precision", "fp32") or "fp32")


def extract_splits(model: Any, data: RetrievalData, cfg: ExperimentConfig) -> tuple[OutputKind, np.ndarray, np.ndarray]:
    """``(kind, query rows, database rows)``; the database rows are the query rows when they coincide."""
    if getattr(model, "cfg", None) is not None:  # the data must fit the trained model before encoding starts
        resolve_input_spec(model.cfg, data.info, cfg.data)
    kw = dict(batch_size=cfg.eval.batch_size, device=cfg.train.device, precision=encode_precision(cfg),
              progress=cfg.train.progress)
    kind, q = extract(model, data.query, desc="encode queries", **kw)  # type: ignore[arg-type]
    db = q if data.database is None else extract(model, data.database, desc="encode database", **kw)[1]  # type: ignore[arg-type]
    return kind, q, db


def encode_splits(model: Any, data: RetrievalData, cfg: ExperimentConfig) -> tuple[np.ndarray, np.ndarray]:
    """(query rows, database rows) of any model (codes or features)."""
    _, q, db = extract_splits(model, data, cfg)
    return q, db


# --------------------------------------------------------------------------- protocols


def resolve_eval(ev: EvalConfig, data: RetrievalData | None) -> EvalConfig:
    """The protocol actually run: ``auto`` and an unset ``topk`` are filled from the dataset.

    Image benchmarks carry their DeepHash cut-off in ``info["topk"]`` (1000 ImageNet-100, 5000
    NUS-WIDE/COCO, 0 = all CIFAR-10); a revisitop dataset carries its ground truth. An explicit
    ``eval.protocol`` / ``eval.topk`` always wins.
    """
    info = data.info if data is not None else {}
    protocol = ev.protocol
    if protocol not in PROTOCOLS:
        raise ConfigError(f"eval.protocol: unknown protocol {protocol!r} ({', '.join(PROTOCOLS)})")
    if protocol == "auto":
        if data is not None and data.gnd is not None:
            protocol = "revisited"
        elif "topk" in info:
            protocol = "map_at_topk"
        else:
            protocol = "map_at_k"
    topk = ev.topk
    if protocol == "map_at_topk" and topk is None:
        topk = int(info.get("topk", 0) or 0)
    if protocol != ev.protocol or topk != ev.topk:
        log.info("eval: protocol %s, topk %s (from the dataset)", protocol, topk)
    return dataclasses.replace(ev, protocol=protocol, topk=topk)


def _rank_features(q: np.ndarray, db: np.ndarray, k: int) -> np.ndarray:
    """(n_query, k) database positions by inner product, best first (the index's tie rule)."""
    from bitseek.index import make_index

    index = make_index("float-ip", dim=int(db.shape[1]))
    index.add(db, np.arange(db.shape[0], dtype=np.int64))
    _, ids = index.search(q, k)
    return ids


def _rank_codes(q: np.ndarray, db: np.ndarray, k: int, ties: str) -> np.ndarray:
    """(n_query, k) database positions by Hamming distance under the evaluator's tie rule."""
    from bitseek.eval.inputs import prepare_codes
    from bitseek.eval.ranking import iter_topk

    codes = prepare_codes(q, db)
    out = np.empty((codes.n_query, k), dtype=np.int64)
    for rows, idx in iter_topk(codes, k, ties):  # type: ignore[arg-type]
        out[rows] = idx
    return out


def rank(kind: OutputKind, q: np.ndarray, db: np.ndarray, k: int | None = None, ties: str = "stable") -> np.ndarray:
    """Top-``k`` (default: all) database positions per query for codes or features."""
    n = int(db.shape[0])
    k = n if k is None else min(int(k), n)
    return _rank_codes(q, db, k, ties) if kind == "codes" else _rank_features(q, db, k)


def evaluate_outputs(kind: OutputKind, q: np.ndarray, db: np.ndarray | None, relevance: Relevance,
                     ev: EvalConfig, dataset: str, method: str) -> list[dict[str, Any]]:
    """Metric rows ``{dataset, method, bits, metric, value}`` for codes or features under ``ev``.

    ``db=None``: the queries are the database. ``bits`` holds the code length, or the descriptor
    dimension for features. Codes under the hashing protocols go straight to the evaluator (its
    own exact ranking); everything else is ranked first and scored from the ranking.
    """
    from bitseek import eval as E
    from bitseek.eval import revisited

    if ev.protocol == "auto":
        raise ConfigError("eval.protocol: 'auto' must be resolved against the dataset first (pipeline.resolve_eval)")
    width = int(q.shape[1]) * (8 if kind == "codes" and q.dtype == np.uint8 else 1)
    rows: list[dict[str, Any]] = []

    def row(metric: str, value: float) -> None:
        rows.append({"dataset": dataset, "method": method, "bits": width, "metric": metric, "value": float(value)})

    same = db is None
    dbx = q if db is None else db
    if ev.protocol == "revisited":
        if not isinstance(relevance, GndRelevance):
            raise ConfigError("eval.protocol: revisited needs a revisitop ground truth (gnd), this data has labels")
        ranks = rank(kind, q, dbx, None, ev.ties).T  # revisitop's (n_db, n_query) layout
        for proto, res in revisited.evaluate(ranks, relevance.gnd).items():
            short = proto[0].upper()
            row(f"mAP-{short}", res.map)
            for k, v in res.mp_at_k.items():
                row(f"mP@{k}-{short}", v)
        return rows
    if not isinstance(relevance, LabelRelevance):
        raise ConfigError(f"eval.protocol: {ev.protocol} scores labels; this data has a revisitop ground truth "
                          "(use eval.protocol=revisited)")
    ql = relevance.query
    dl = None if same else relevance.searched
    if ev.protocol == "map_at_k":
        if kind == "codes":
            res = E.map_at_k(q, None if same else db, ql, dl, ks=tuple(ev.ks), ties=ev.ties)
        else:
            ranking = rank(kind, q, dbx, max(ev.ks))
            res = E.map_at_k_ranked(ranking, ql, dl, ks=tuple(ev.ks))
        for k in ev.ks:
            row(f"mAP@{k}", res[k])
    elif ev.protocol == "map_at_topk":
        topk = ev.topk or None
        if kind == "codes":
            value = E.map_at_topk(q, None if same else db, ql, dl, topk=topk, ties=ev.ties)
        else:
            value = E.map_at_topk_ranked(rank(kind, q, dbx, None), ql, dl, topk=topk)
        shown = topk if topk is not None and topk <= dbx.shape[0] else None
        row(f"mAP@{shown or 'all'}", value)
    else:
        raise ConfigError(f"eval.protocol: unknown protocol {ev.protocol!r} ({', '.join(PROTOCOLS[1:])})")
    return rows


def evaluate_codes(q: np.ndarray, db: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray,
                   ev: EvalConfig, dataset: str, method: str, bits: int) -> list[dict[str, Any]]:
    """Metric rows for codes and labels (``db is q``: the queries are the database)."""
    same = db is q
    rel = LabelRelevance(q_labels, None if same else db_labels)
    rows = evaluate_outputs("codes", q, None if same else db, rel, resolve_eval(ev, None), dataset, method)
    for r in rows:
        r["bits"] = int(bits)
    return rows


def evaluate(cfg: ExperimentConfig, model: Any, data: RetrievalData, out_dir: Path | None = None,
             method: str | None = None) -> list[dict[str, Any]]:
    """Encode, evaluate and (optionally) save the code or feature sets and metrics in ``out_dir``.

    Saved code sets keep ternary zeros, so ``bitseek eval-codes`` on them gives the same numbers.
    """
    if not dist.is_main():  # under torchrun: rank 0 encodes and scores once; `bitseek encode --shard` shards
        dist.barrier()
        return []
    try:
        return _evaluate(cfg, model, data, out_dir, method)
    finally:
        dist.barrier()


def _evaluate(cfg: ExperimentConfig, model: Any, data: RetrievalData, out_dir: Path | None,
              method: str | None) -> list[dict[str, Any]]:
    ev = resolve_eval(cfg.eval, data)
    kind, q, db = extract_splits(model, data, cfg)
    rows = evaluate_outputs(kind, q, None if data.database is None else db, data.relevance, ev,
                            dataset=str(cfg.data.name), method=method or str(cfg.model.name))
    if out_dir is not None:
        from bitseek.eval.report import write_metrics_json

        out_dir.mkdir(parents=True, exist_ok=True)
        ext = "codes" if kind == "codes" else "feats"
        save_extracted(kind, q, out_dir / f"query.{ext}", attrs={"split": "query", "model": cfg.model.name})
        if data.database is not None:
            save_extracted(kind, db, out_dir / f"database.{ext}", attrs={"split": "database", "model": cfg.model.name})
        write_metrics_json(out_dir / "metrics.json", rows, config=dataclasses.asdict(cfg),
                           eval={"protocol": ev.protocol, "topk": ev.topk, "ties": ev.ties,
                                 "precision": encode_precision(cfg), "output": kind},
                           scored=getattr(model, "checkpoint_info", None) or {
                               "path": None, "note": "model in memory, not loaded from a folder",
                               "bitseek_version": bitseek.__version__, "torch_version": torch.__version__})
    return rows


__all__ = [
    "PROTOCOLS",
    "train",
    "load_trained",
    "extract_splits",
    "encode_splits",
    "resolve_eval",
    "rank",
    "evaluate_outputs",
    "evaluate_codes",
    "evaluate",
    "is_engine_trained",
    "batch_features",
    "collect_features",
]

"""The data flow as functions: config -> data + model -> train -> codes -> evaluation rows.

The CLI and the demos call these; nothing here parses arguments or prints tables.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import bitseek

from bitseek.atomic import atomic_write_text
from bitseek.codes import CodeSet
from bitseek.config import EvalConfig, ExperimentConfig, save_resolved
from bitseek.data.base import RetrievalData, load_data
from bitseek.errors import ConfigError
from bitseek.models.spec import resolve_input_spec
from bitseek.registry import create_model
from bitseek.train import checkpoint as ckpt
from bitseek.train.encode import encode_dataset
from bitseek.train.engine import Trainer, iterate_batches, seed_everything


def is_deep(model: Any) -> bool:
    return isinstance(model, torch.nn.Module)


def batch_features(batch: dict[str, Any]) -> np.ndarray:
    """What shallow baselines see (their own input view): pooled frame features or flattened pixels."""
    from bitseek.models.shallow import vectors

    return np.asarray(vectors(batch, "fit()").float().numpy(), dtype=np.float32)


def collect_features(dataset: Any, batch_size: int = 256) -> np.ndarray:
    return np.concatenate([batch_features(b) for b in iterate_batches(dataset, batch_size)])


def train(cfg: ExperimentConfig, data: RetrievalData | None = None) -> tuple[Any, RetrievalData]:
    """Train (deep: the engine; shallow: ``fit``) and return the model and its data."""
    data = data if data is not None else load_data(cfg.data)
    cfg.model = resolve_input_spec(cfg.model, data.info, cfg.data)  # fill `auto`, refuse a mismatch: before any work
    seed_everything(cfg.train.seed)
    model = create_model(cfg.model)
    if is_deep(model):
        Trainer(model, cfg, data).fit()
    else:
        ckpt.check_run_folder(cfg.to_dict(), cfg.out_dir)  # never refit over a different run
        t0 = time.perf_counter()
        model.fit(collect_features(data.train))
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
        save_resolved(cfg, cfg.out_dir)
        ckpt.save_model(cfg.out_dir / "model", model, model.cfg)
        atomic_write_text(cfg.out_dir / "DONE", f'{{"fit_seconds": {time.perf_counter() - t0:.3f}}}')
    return model, data


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


def encode_splits(model: Any, data: RetrievalData, cfg: ExperimentConfig) -> tuple[np.ndarray, np.ndarray]:
    """(query codes, database codes); the database codes are the query codes when they coincide."""
    if getattr(model, "cfg", None) is not None:  # the data must fit the trained model before encoding starts
        resolve_input_spec(model.cfg, data.info, cfg.data)
    device = cfg.train.device
    bs = cfg.eval.batch_size
    q = encode_dataset(model, data.query, bs, device, progress=cfg.train.progress, desc="encode queries")
    db = q if data.database is None else encode_dataset(model, data.database, bs, device,
                                                        progress=cfg.train.progress, desc="encode database")
    return q, db


def evaluate_codes(q: np.ndarray, db: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray,
                   ev: EvalConfig, dataset: str, method: str, bits: int) -> list[dict[str, Any]]:
    """Metric rows ``{dataset, method, bits, metric, value}`` under the configured protocol."""
    from bitseek import eval as E

    rows: list[dict[str, Any]] = []

    def row(metric: str, value: float) -> None:
        rows.append({"dataset": dataset, "method": method, "bits": int(bits), "metric": metric, "value": float(value)})

    if ev.protocol == "map_at_k":
        res = E.map_at_k(q, db, q_labels, db_labels, ks=tuple(ev.ks), ties=ev.ties)
        for k in ev.ks:
            row(f"mAP@{k}", res[k])
    elif ev.protocol == "map_at_topk":
        topk = ev.topk or None
        row(f"mAP@{topk or 'all'}", E.map_at_topk(q, db, q_labels, db_labels, topk=topk, ties=ev.ties))
    else:
        raise ConfigError(f"eval.protocol {ev.protocol!r} needs rankings, not codes (use map_at_k or map_at_topk)")
    return rows


def evaluate(cfg: ExperimentConfig, model: Any, data: RetrievalData, out_dir: Path | None = None,
             method: str | None = None) -> list[dict[str, Any]]:
    """Encode, evaluate and (optionally) save code sets and metrics in ``out_dir``."""
    q, db = encode_splits(model, data, cfg)
    bits = int(q.shape[1])
    rows = evaluate_codes(q, db, data.query_labels, data.database_labels, cfg.eval,
                          dataset=str(cfg.data.name), method=method or str(cfg.model.name), bits=bits)
    if out_dir is not None:
        from bitseek.eval.report import write_metrics_json

        out_dir.mkdir(parents=True, exist_ok=True)
        CodeSet.from_signed(q, attrs={"split": "query", "model": cfg.model.name}).save(out_dir / "query.codes")
        if data.database is not None:
            CodeSet.from_signed(db, attrs={"split": "database", "model": cfg.model.name}).save(out_dir / "database.codes")
        write_metrics_json(out_dir / "metrics.json", rows, config=dataclasses.asdict(cfg),
                           scored=getattr(model, "checkpoint_info", None) or {
                               "path": None, "note": "model in memory, not loaded from a folder",
                               "bitseek_version": bitseek.__version__, "torch_version": torch.__version__})
    return rows

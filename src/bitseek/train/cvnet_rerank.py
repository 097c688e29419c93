"""Training CVNet's re-ranker (the authors released none): ``train_rerank`` and its packaged recipes.

The recipes ``cvnet/rerank-r50`` and ``cvnet/rerank-r101`` (paper scale: the GLDv2-clean images as
class folders, the global model trained by ``train_global`` as ``model.init``) and
``cvnet/rerank-lite0`` (CPU: CVNet on the ImageNet-pretrained EfficientNet-Lite0) name the
``cvnet-rerank`` model (:mod:`bitseek.models.cvnet.rerank_training`: backbone frozen, cross-entropy
on the 2-way output) and ``rerank-pairs`` data (:mod:`bitseek.data.rerank_pairs`). Before training,
the frozen network computes every training image's global descriptor once (the global model does
not change while the re-ranker trains, so the "current" global model is this one) and mines each
image's ``hard_k`` most similar images of other landmarks; with ``data.cache_maps`` it also keeps
every image's stage-3 map, which is exact because the backbone is frozen. The engine then does the
rest: checkpoints with exact resume, AMP only when ``train.precision`` asks, DDP under ``torchrun``,
progress and ``log.jsonl``. ``bitseek train --config cvnet/rerank-lite0 model.init=RUN/cvnet`` runs the
same path (:func:`bitseek.pipeline.train` sends every ``rerank-pairs`` config here).

The run folder gets the engine's ``model/`` and ``cvnet/``: the plain CVNet with the trained head,
which retrieval and the demo load with :func:`bitseek.train.checkpoint.load_model`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from bitseek.config import ExperimentConfig, load_config, resolve_config_path
from bitseek.data.base import RetrievalData
from bitseek.data.rerank_pairs import Curriculum, RerankPairs, TrainImages, mine_hard_negatives, scan_landmark_folder
from bitseek.errors import ConfigError

__all__ = ["COLLAPSED_SPREAD", "RERANK_RECIPES", "build_rerank_data", "feature_bank", "fit_rerank", "rerank_config",
           "score_spread", "train_rerank"]

RERANK_RECIPES = ("cvnet/rerank-r50", "cvnet/rerank-r101", "cvnet/rerank-lite0")
#: a head whose "same landmark" probability varies less than this over training pairs has collapsed
#: to a (practically) constant output, its loss at ln 2: in the fused score, similarity + 0.5 x
#: probability, it then moves scores by about 1e-3, i.e. it only reorders near-ties
COLLAPSED_SPREAD = 5e-3
log = logging.getLogger(__name__)


def rerank_config(config: str | os.PathLike[str] | ExperimentConfig, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """A recipe name, a YAML file or a config already built -> the checked experiment config."""
    if isinstance(config, ExperimentConfig):
        if overrides:
            raise ConfigError("train_rerank: overrides apply to a recipe name or file, not to a built config")
        cfg = config
    else:
        cfg = load_config(resolve_config_path(str(config)), list(overrides))
    if getattr(cfg.model, "name", None) != "cvnet-rerank" or getattr(cfg.data, "name", None) != "rerank-pairs":
        raise ConfigError(f"train_rerank: needs model.name=cvnet-rerank and data.name=rerank-pairs, got "
                          f"{getattr(cfg.model, 'name', None)!r} and {getattr(cfg.data, 'name', None)!r}; "
                          f"recipes: {', '.join(RERANK_RECIPES)}")
    return cfg


@torch.no_grad()
def feature_bank(net: Any, images: TrainImages, batch_size: int, maps: bool,
                 device: torch.device | str = "cpu") -> tuple[np.ndarray, list[torch.Tensor] | None]:
    """Every image's global descriptor (N, D) and, with ``maps``, its stage-3 map (kept in float16)."""
    from bitseek.progress import progress

    was = net.training
    net.eval()
    descs: list[np.ndarray] = []
    kept: list[torch.Tensor] | None = [] if maps else None
    dtype = next(net.parameters()).dtype
    try:
        for s in progress(range(0, len(images), batch_size), desc="re-rank pairs: descriptors", unit="batch"):
            x = torch.stack([images(i) for i in range(s, min(s + batch_size, len(images)))]).to(device, dtype)
            descs.append(net.global_descriptor(x).float().cpu().numpy())
            if kept is not None:
                kept.extend(net.rerank_features(x).to(torch.float16).cpu().unbind(0))
    finally:
        net.train(was)
    return np.concatenate(descs), kept


@torch.no_grad()
def score_spread(model: Any, pairs: RerankPairs, n: int = 64) -> float:
    """Standard deviation of the head's "same landmark" probability over the first ``n`` pairs of the
    current epoch, without Hide-and-Seek: 0 when the head gives every pair the same score."""
    rows = pairs.pairs[: min(n, len(pairs))]
    device = next(model.net.rerank.parameters()).device
    batch = {f"{side}_{pairs.kind}": torch.stack([pairs.source(int(i)) for i in rows[:, col]]).to(device)
             for side, col in (("query", 0), ("key", 1))}
    was = model.training
    model.eval()
    try:
        logits = model.net.rerank.logits(model._side(batch, "query"), model._side(batch, "key"))
    finally:
        model.train(was)
    return float(torch.softmax(logits.float(), dim=1)[:, 1].std()) if len(rows) > 1 else 0.0


def build_rerank_data(cfg: ExperimentConfig, net: Any, device: torch.device | str = "cpu") -> RetrievalData:
    """The ``rerank-pairs`` training set of ``cfg`` with hard negatives mined by ``net``'s global descriptors."""
    d = cfg.data
    if not d.root:
        raise ConfigError("data.root: give the class-per-folder training photos (data.root=PATH/<landmark>/<image>)")
    paths, labels, classes = scan_landmark_folder(d.root, d.extensions)
    images = TrainImages(paths, d.image_size)
    desc, maps = feature_bank(net, images, d.mine_batch_size, d.cache_maps, device)
    hard = mine_hard_negatives(desc, labels, d.hard_k)
    curriculum = Curriculum(tuple(d.hard_ratio), tuple(d.hide_prob), cfg.train.epochs)  # type: ignore[arg-type]
    source = maps.__getitem__ if maps is not None else images
    pairs = RerankPairs(source, labels, hard, curriculum, kind="map" if maps is not None else "image",
                        hide_grid=d.hide_grid, hide_cell_prob=d.hide_cell_prob, seed=d.seed)
    info = {"name": d.name, "root": str(d.root), "images": len(paths), "landmarks": len(classes),
            "pairs_per_epoch": len(pairs), "hard_k": int(hard.shape[1]), "cached_maps": maps is not None}
    return RetrievalData(train=pairs, query=pairs, database=None, query_labels=None, db_labels=None, info=info)


def fit_rerank(cfg: ExperimentConfig, *, net: Any = None, data: RetrievalData | None = None
               ) -> tuple[Any, RetrievalData, Path]:
    """Train (or resume) the re-ranker of the checked config ``cfg``; returns ``(CVNetRerank, its data, run)``.

    The one path of :func:`train_rerank` and ``bitseek train`` (:func:`bitseek.pipeline.train`);
    ``data`` is a ``rerank-pairs`` set already built with this network (else it is mined here)."""
    import copy

    from bitseek.models.cvnet.rerank_training import CVNetRerank
    from bitseek.registry import create_model
    from bitseek.train.checkpoint import save_model
    from bitseek.train.engine import Trainer, resolve_device, seed_everything
    from bitseek.train import dist

    cfg = rerank_config(cfg)
    seed_everything(cfg.train.seed)  # the head's initial weights: the same for the same seed
    if net is not None:
        model = CVNetRerank(cfg.model, copy.deepcopy(net))
    else:
        model = create_model(cfg.model)
    device = resolve_device(cfg.train.device)
    model.to(device)
    if data is None:
        data = build_rerank_data(cfg, model.net, device)
    run = Path(Trainer(model, cfg, data).fit())
    spread = score_spread(model, data.train)  # type: ignore[arg-type]
    data.info["score_spread"] = round(spread, 6)
    if spread < COLLAPSED_SPREAD:
        log.warning("%s: the trained re-rank head gives every training pair nearly the same score (spread %.1e): its "
                    "training collapsed and re-ranking with it only reorders near-ties; train again with another "
                    "train.seed or a lower optim.lr", run, spread)
    with dist.main_only() as me:
        if me:
            save_model(run / "cvnet", model.net, model.net.cfg,
                       extra={"exported_from": str(run / "model"), "rerank_training": data.info})
    return model, data, run


def train_rerank(config: str | os.PathLike[str] | ExperimentConfig, overrides: Sequence[str] = (), *,
                 net: Any = None, out_dir: str | os.PathLike[str] | None = None) -> tuple[Any, Path]:
    """Train (or resume) CVNet's re-ranker; returns ``(CVNet in eval mode, run folder)``.

    ``net`` is a CVNet already in memory to start from (its global model mines the negatives; it is
    not modified: the run trains a copy); else ``model.init``/``model.weights`` initialise one.
    ``out_dir`` replaces ``train.out_dir``."""
    cfg = rerank_config(config, overrides)
    if out_dir is not None:
        cfg.train.out_dir = str(out_dir)
    model, _, run = fit_rerank(cfg, net=net)
    return model.net.eval(), run

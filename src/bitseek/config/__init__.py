"""Typed configs: YAML -> dataclasses, with ``key.sub=value`` overrides.

``typed`` is the generic coercer (a leaf: the registry imports it); ``experiment`` holds the
experiment schema and loader, which uses the registry. The experiment names are resolved lazily
so that importing the leaf never imports the registry back (no config <-> registry cycle).
"""

from __future__ import annotations

import importlib
from typing import Any

from bitseek.config.typed import coerce, from_dict, suggest

_EXPERIMENT = (
    "OptimConfig", "TrainConfig", "EvalConfig", "ExperimentConfig", "build_experiment", "apply_overrides",
    "load_yaml", "load_config", "save_resolved", "resolve_config_path", "packaged_configs", "check_device",
    "parse_override",
)
_FOREIGN = ("load_foreign",)

__all__ = ["coerce", "from_dict", "suggest", *_EXPERIMENT, *_FOREIGN]


def __getattr__(name: str) -> Any:
    if name in _EXPERIMENT:
        return getattr(importlib.import_module("bitseek.config.experiment"), name)
    if name in _FOREIGN:
        return getattr(importlib.import_module("bitseek.config.foreign"), name)
    raise AttributeError(f"module 'bitseek.config' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

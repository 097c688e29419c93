"""Name -> (config dataclass, factory) registries for models and datasets (timm-style).

A model module registers itself with::

    @register_model("conmh", ConMHConfig)
    def build_conmh(cfg: ConMHConfig) -> ConMH: ...

and users call ``create_model("conmh", bits=64)`` or ``create_model(cfg_dataclass)``.
Registration happens on import of the module; ``_ensure_loaded`` imports the built-in modules
lazily so that ``import bitseek`` stays cheap.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Callable

from bitseek.errors import ConfigError


@dataclass(frozen=True)
class Entry:
    name: str
    config_cls: type
    factory: Callable[[Any], Any]


class Registry:
    """A named collection of (config class, factory) pairs."""

    def __init__(self, kind: str, builtin_modules: tuple[str, ...]) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._builtin = builtin_modules
        self._loaded = False

    def register(self, name: str, config_cls: type) -> Callable[[Callable], Callable]:
        if not is_dataclass(config_cls):
            raise TypeError(f"{self.kind} {name!r}: config class must be a dataclass")

        def deco(factory: Callable) -> Callable:
            if name in self._entries and self._entries[name].factory is not factory:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, config_cls, factory)
            return factory

        return deco

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._loaded = True
            for mod in self._builtin:
                try:
                    importlib.import_module(mod)
                except ModuleNotFoundError as e:  # a built-in module not present in this build
                    if e.name != mod:
                        raise

    def get(self, name: str) -> Entry:
        self._ensure_loaded()
        if name not in self._entries:
            near = difflib.get_close_matches(name, list(self._entries), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"unknown {self.kind} {name!r}{hint} (known: {', '.join(sorted(self._entries))})")
        return self._entries[name]

    def names(self, pattern: str = "*") -> list[str]:
        self._ensure_loaded()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def config(self, name: str, **kwargs: Any) -> Any:
        """The registered config dataclass for ``name``, filled from ``kwargs`` (validated)."""
        from bitseek.config import from_dict

        entry = self.get(name)
        return from_dict(entry.config_cls, {"name": name, **kwargs} if _has_name(entry.config_cls) else kwargs, self.kind)

    def create(self, cfg_or_name: Any, **kwargs: Any) -> Any:
        if isinstance(cfg_or_name, str):
            cfg = self.config(cfg_or_name, **kwargs)
            name = cfg_or_name
        else:
            cfg = cfg_or_name
            name = getattr(cfg, "name", None)
            if name is None:
                raise ConfigError(f"{self.kind} config {type(cfg).__name__} has no 'name' field")
        return self.get(name).factory(cfg)


def _has_name(cls: type) -> bool:
    return any(f.name == "name" for f in fields(cls))


MODELS = Registry(
    "model",
    (
        "bitseek.models.conmh",
        "bitseek.models.wsch",
        "bitseek.models.csce",
        "bitseek.models.shallow",
    ),
)
DATASETS = Registry(
    "dataset",
    (
        "bitseek.data.video_features",
        "bitseek.data.images",
    ),
)

register_model = MODELS.register
register_dataset = DATASETS.register


def create_model(cfg_or_name: Any, **kwargs: Any) -> Any:
    return MODELS.create(cfg_or_name, **kwargs)


def list_models(pattern: str = "*") -> list[str]:
    return MODELS.names(pattern)

"""One ``Registry`` class for every pluggable kind: models, datasets, backbones, converters, index
engines and re-rankers (timm-style name -> factory tables).

A module registers its entries on import::

    @MODELS.register("conmh", ConMHConfig)          # named config dataclass -> factory(cfg)
    def build_conmh(cfg: ConMHConfig) -> ConMH: ...

    @BACKBONES.register("resnet50")                 # no config class -> factory(**kwargs)
    def resnet50() -> ResNet: ...

Each registry knows the built-in modules that fill it and imports them on first use, so ``import
bitseek`` stays cheap. A built-in module that fails to import raises: a broken build must never show
up as a silently shorter ``bitseek list``. Tests add entries for one block with ``registered(...)``.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import importlib
import threading
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Callable, Iterator

from bitseek.config.typed import from_dict
from bitseek.errors import ConfigError

__all__ = [
    "BACKBONES",
    "CONVERTERS",
    "DATASETS",
    "ENGINES",
    "MODELS",
    "RERANKERS",
    "Entry",
    "Registry",
    "create_model",
    "list_models",
    "register_dataset",
    "register_model",
]


@dataclass(frozen=True)
class Entry:
    """One registered name: its factory (a function or class) and, optionally, its config dataclass."""

    name: str
    factory: Callable[..., Any]
    config_cls: type | None = None

    @property
    def module(self) -> str:
        return getattr(self.factory, "__module__", "") or ""

    @property
    def summary(self) -> str:
        """First line of the factory's (or its config's) docstring, for ``bitseek list``."""
        for obj in (self.factory, self.config_cls):
            doc = (getattr(obj, "__doc__", None) or "").strip()
            generated = f"{getattr(obj, '__name__', '')}("  # a dataclass's auto-generated signature doc
            if doc and not doc.startswith(("Initialize self", "Create and return", generated)):
                return doc.splitlines()[0].strip()
        return ""


class Registry:
    """A named table of factories of one kind, filled by importing its built-in modules on first use."""

    def __init__(self, kind: str, builtin_modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._builtin: list[str] = list(builtin_modules)
        self._loaded = False
        self._loading = False
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ registration
    def register(self, name: str, config_cls: type | None = None, *,
                 replace: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering ``factory`` under ``name`` (``config_cls``: its config dataclass)."""
        if config_cls is not None and not is_dataclass(config_cls):
            raise TypeError(f"{self.kind} {name!r}: config class must be a dataclass")

        def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
            self.add(name, factory, config_cls, replace=replace)
            return factory

        return deco

    def add(self, name: str, factory: Callable[..., Any], config_cls: type | None = None, *,
            replace: bool = False) -> Entry:
        """Register ``factory`` under ``name``; a second, different factory for a name is an error."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind}: a registered name must be a non-empty string, got {name!r}")
        with self._lock:
            old = self._entries.get(name)
            if old is not None and not replace and old.factory is not factory:
                raise ValueError(f"{self.kind} {name!r} is registered twice "
                                 f"({old.module} and {getattr(factory, '__module__', '?')})")
            entry = Entry(name, factory, config_cls)
            self._entries[name] = entry
            return entry

    def unregister(self, name: str) -> Entry:
        """Remove ``name`` (tests, plugins being unloaded); unknown names are an error."""
        with self._lock:
            if name not in self._entries:
                raise KeyError(f"{self.kind} {name!r} is not registered")
            return self._entries.pop(name)

    @contextlib.contextmanager
    def registered(self, name: str, factory: Callable[..., Any],
                   config_cls: type | None = None) -> Iterator[Entry]:
        """Register ``name`` for the duration of a ``with`` block, then restore what was there."""
        self._ensure_loaded()
        with self._lock:
            previous = self._entries.get(name)
            entry = self.add(name, factory, config_cls, replace=True)
        try:
            yield entry
        finally:
            with self._lock:
                if previous is None:
                    self._entries.pop(name, None)
                else:
                    self._entries[name] = previous

    def add_builtin(self, module: str) -> None:
        """Declare one more module whose import registers built-in entries (loaded on next use)."""
        with self._lock:
            if module not in self._builtin:
                self._builtin.append(module)
                self._loaded = False

    @property
    def builtin_modules(self) -> tuple[str, ...]:
        return tuple(self._builtin)

    def _ensure_loaded(self) -> None:
        """Import every built-in module once; an import failure propagates and is retried next time."""
        if self._loaded:
            return
        with self._lock:  # other threads wait for the import; re-entry from a module being imported
            if self._loaded or self._loading:  # (same thread, RLock) sees the partial table
                return
            self._loading = True
            try:
                for mod in list(self._builtin):
                    try:
                        importlib.import_module(mod)
                    except ImportError as e:
                        raise ImportError(f"built-in {self.kind} module {mod} failed to import: {e}") from e
                self._loaded = True
            finally:
                self._loading = False

    # ------------------------------------------------------------------ queries
    def get(self, name: str) -> Entry:
        self._ensure_loaded()
        entry = self._entries.get(name)
        if entry is None:
            known = sorted(self._entries)
            near = difflib.get_close_matches(str(name), known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"unknown {self.kind} {name!r}{hint} (known: {', '.join(known) or 'none'})")
        return entry

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._entries)

    def names(self, pattern: str = "*", module: str | None = None) -> list[str]:
        """Registered names matching a glob ``pattern`` (and defined in ``module``'s package, if given)."""
        self._ensure_loaded()
        return sorted(n for n, e in self._entries.items() if fnmatch.fnmatch(n, pattern)
                      and (module is None or e.module == module or e.module.startswith(module + ".")))

    def entries(self, pattern: str = "*") -> list[Entry]:
        return [self._entries[n] for n in self.names(pattern)]

    def config(self, name: str, **kwargs: Any) -> Any:
        """The registered config dataclass for ``name``, filled from ``kwargs`` and validated."""
        entry = self.get(name)
        if entry.config_cls is None:
            raise ConfigError(f"{self.kind} {name!r} has no config class")
        data = {"name": name, **kwargs} if _has_name(entry.config_cls) else kwargs
        return from_dict(entry.config_cls, data, self.kind)

    def create(self, cfg_or_name: Any, **kwargs: Any) -> Any:
        """Build an entry: from a config dataclass (its ``name`` field), or from a name and keywords."""
        if isinstance(cfg_or_name, str):
            entry = self.get(cfg_or_name)
            if entry.config_cls is None:
                return entry.factory(**kwargs)
            return entry.factory(self.config(cfg_or_name, **kwargs))
        if kwargs:
            raise TypeError(f"{self.kind}: keyword arguments need a name, not a config object")
        name = getattr(cfg_or_name, "name", None)
        if name is None:
            raise ConfigError(f"{self.kind} config {type(cfg_or_name).__name__} has no 'name' field")
        return self.get(name).factory(cfg_or_name)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


def _has_name(cls: type) -> bool:
    return any(f.name == "name" for f in fields(cls))


# Model modules also define their checkpoint converters, so CONVERTERS loads the same modules.
_MODEL_MODULES = (
    "bitseek.models.conmh",
    "bitseek.models.wsch",
    "bitseek.models.csce",
    "bitseek.models.shallow",
    "bitseek.models.cvnet",
    "bitseek.models.cvnet.global_training",
    "bitseek.models.cvnet.rerank_training",
)

MODELS = Registry("model", _MODEL_MODULES)
DATASETS = Registry("dataset", ("bitseek.data.video_features", "bitseek.data.images", "bitseek.data.revisited",
                                "bitseek.data.embedded.moving_mnist", "bitseek.data.embedded.landmarks",
                                "bitseek.data.landmark_train", "bitseek.data.rerank_pairs", "bitseek.ingest.features"))
BACKBONES = Registry("backbone", ("bitseek.models.backbones",))
CONVERTERS = Registry("converter", _MODEL_MODULES)
ENGINES = Registry("index engine", ("bitseek.index",))
RERANKERS = Registry("re-ranker", ("bitseek.rerank",))

REGISTRIES: dict[str, Registry] = {
    "models": MODELS,
    "datasets": DATASETS,
    "backbones": BACKBONES,
    "converters": CONVERTERS,
    "engines": ENGINES,
    "rerankers": RERANKERS,
}

register_model = MODELS.register
register_dataset = DATASETS.register


def create_model(cfg_or_name: Any, *, pretrained: bool = True, **kwargs: Any) -> Any:
    """Build a registered model; with ``pretrained`` also load the initialisation weights it asks for.

    A model names the files it wants by part (``pretrained_sources() -> {"backbone": path}``); they are
    read here by the one weights reader and handed over (``load_pretrained(part, state_dict, source)``),
    so models never open files. Rebuilding a trained checkpoint passes ``pretrained=False``: the
    checkpoint already holds every weight.
    """
    model = MODELS.create(cfg_or_name, **kwargs)
    sources = getattr(model, "pretrained_sources", None)
    if pretrained and callable(sources):
        from bitseek.weights import read_state_dict

        for part, path in sources().items():
            model.load_pretrained(part, read_state_dict(path), str(path))
    return model


def list_models(pattern: str = "*") -> list[str]:
    return MODELS.names(pattern)

"""Generic dataclass coercion: a nested dict (YAML, overrides) -> a typed, validated dataclass.

A leaf module (it imports only ``bitseek.errors``) so that the registry and every config schema can
use it without an import cycle. Unknown keys are errors naming the nearest valid key; values are
coerced to the annotated type or rejected with the dotted path of the field.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, Union

import yaml

from bitseek.errors import ConfigError

__all__ = ["coerce", "from_dict", "suggest"]


def suggest(key: str, valid: list[str]) -> str:
    """``; did you mean 'x'?`` for the nearest of ``valid``, or the list of valid keys."""
    near = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"; did you mean {near[0]!r}?" if near else f" (valid: {', '.join(valid)})"


def coerce(value: Any, tp: Any, where: str) -> Any:
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
                return coerce(value, a, where)
            except ConfigError as e:
                last = e
        raise last or ConfigError(f"{where}: cannot use {value!r}")
    if origin in (list, tuple):
        (inner,) = typing.get_args(tp)[:1] or (Any,)
        if value is None:
            return []
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if value is None:
            return {}
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
        if isinstance(value, bool) or value is None:
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if value is None:  # `key:` in YAML and `key=` on the command line mean "empty", never "None"
            return ""
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)  # type: ignore[arg-type]
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown or missing keys raise ConfigError.

    A ``ValueError``/``TypeError`` raised by the dataclass's own ``__post_init__`` validation is
    re-raised as a ConfigError prefixed with ``where``, so every check names the section it failed in.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    flds = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    for k in data:
        if k not in flds:
            raise ConfigError(f"{where}: unknown key {k!r}{suggest(str(k), list(flds))}")
    auto = getattr(cls, "INPUT_SPEC", None) or {}  # input fields that may say `auto` (filled from the data)
    kwargs: dict[str, Any] = {}
    for name, f in flds.items():
        if name in data:
            if name in auto and isinstance(data[name], str) and data[name].strip().lower() == "auto":
                kwargs[name] = 0
                continue
            kwargs[name] = coerce(data[name], hints[name], f"{where}.{name}")
        elif f.default is MISSING and f.default_factory is MISSING:  # type: ignore[misc]
            raise ConfigError(f"{where}: missing required key {name!r}")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(where) else f"{where}: {msg}") from None

"""Index factory strings, in the spirit of faiss ``index_factory`` but for this layer's backends.

Grammar (case-insensitive, spaces ignored)::

    spec    := backend ("," option)*
    backend := "flat"                      exact Hamming scan
             | "ivf" NLIST                 inverted lists, needs train()
             | "mih" NHASH                 multi-index hashing, b = bits / NHASH
             | "multihash" NHASH "x" B     multi-index hashing, explicit substring length
             | "hnsw" M                    HNSW graph
             | "float-ip"                  exact inner product on float descriptors (needs dim)
    option  := NAME "=" INTEGER            nprobe (ivf), nflip (mih), ef_search / ef_construction (hnsw)

Examples: ``"flat"``, ``"ivf1024,nprobe=16"``, ``"mih4"``, ``"multihash4x16,nflip=2"``,
``"hnsw32,ef_search=128"``, ``"float-ip"``. ``Index.spec`` gives back the canonical form.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from bitseek.errors import ConfigError, InputError
from bitseek.index.base import Index

__all__ = ["ParsedSpec", "parse_spec", "make_index", "list_backends", "index_from_codeset", "load_index"]

_EXAMPLES = ("flat", "ivf1024", "mih4", "multihash4x16", "hnsw32", "float-ip")


@dataclass(frozen=True)
class ParsedSpec:
    cls: type[Index]
    params: dict[str, int]
    options: dict[str, int]


def list_backends() -> list[str]:
    """Backend names known to ``load`` (and the spec grammar)."""
    return sorted(Index._registry)


def parse_spec(spec: str) -> ParsedSpec:
    """Split a factory string into backend class, structural parameters and options."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"index spec must be a non-empty string like 'flat' or 'ivf1024,nprobe=16', got {spec!r}")
    head, *opts = [t.strip() for t in re.sub(r"\s+", "", spec).lower().split(",")]
    for cls in Index._registry.values():
        for pattern in cls.name_patterns:
            m = re.fullmatch(pattern, head)
            if m:
                params = {k: int(v) for k, v in m.groupdict().items() if v is not None}
                return ParsedSpec(cls, params, _parse_options(spec, cls, opts))
    stems = {re.sub(r"[0-9]+", "", e): e for e in _EXAMPLES}  # compare shapes, not numbers
    near = difflib.get_close_matches(re.sub(r"[0-9]+", "", head), list(stems), n=1)
    hint = f"; did you mean {stems[near[0]]!r}?" if near else ""
    raise ConfigError(
        f"unknown index backend {head!r} in spec {spec!r}{hint} (forms: flat, ivf<nlist>, mih<nhash>, "
        "multihash<nhash>x<b>, hnsw<M>, float-ip)"
    )


def _parse_options(spec: str, cls: type[Index], opts: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for opt in opts:
        key, sep, value = opt.partition("=")
        if not sep or not key:
            raise ConfigError(f"index spec {spec!r}: option {opt!r} must look like name=value")
        if key not in cls.options_spec:
            valid = ", ".join(sorted(cls.options_spec)) or "none"
            near = difflib.get_close_matches(key, list(cls.options_spec), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"index spec {spec!r}: {cls.backend} has no option {key!r}{hint} (valid: {valid})")
        if key in out:
            raise ConfigError(f"index spec {spec!r}: option {key!r} given twice")
        if not re.fullmatch(r"[0-9]+", value):
            raise ConfigError(f"index spec {spec!r}: option {key} needs a non-negative integer, got {value!r}")
        out[key] = int(value)
    return out


def make_index(spec: str, bits: int | None = None, *, dim: int | None = None) -> Index:
    """Build an empty index from a factory string: ``make_index("ivf1024,nprobe=16", bits=64)``.

    Binary backends take ``bits`` (code length); ``float-ip`` takes ``dim`` (descriptor length).
    """
    p = parse_spec(spec)
    if p.cls.metric == "hamming":
        if bits is None:
            raise ConfigError(f"index spec {spec!r}: a binary backend needs bits= (the code length)")
        if dim is not None and dim != bits:
            raise ConfigError(f"index spec {spec!r}: dim={dim} contradicts bits={bits}")
        return p.cls(bits, p.params, p.options)
    if dim is None:
        raise ConfigError(f"index spec {spec!r}: float-ip needs dim= (the descriptor length), not bits=")
    if bits is not None:
        raise ConfigError(f"index spec {spec!r}: float-ip holds float descriptors; pass dim=, not bits=")
    return p.cls(dim, p.params, p.options)


def load_index(path: str | os.PathLike[str]) -> Index:
    """Load any index saved by ``Index.save`` (the backend is read from the file)."""
    return Index.load(path)


def index_from_codeset(
    codeset: Any, spec: str = "flat", train_size: int | None = None, seed: int = 0
) -> Index:
    """Build an index holding a CodeSet (object or file path), training it on the codes if needed.

    ``train_size`` caps the training sample for trained backends (a seeded random subset).
    """
    from bitseek.codes import CodeSet

    cs = CodeSet.load(codeset) if isinstance(codeset, (str, os.PathLike)) else codeset
    if not isinstance(cs, CodeSet):
        raise InputError(f"index_from_codeset(): expected a CodeSet or a path, got {type(cs).__name__}")
    index = make_index(spec, bits=cs.bits)
    if not index.is_trained:
        sample = cs.codes
        if train_size is not None and train_size < len(cs):
            rows = np.sort(np.random.default_rng(seed).choice(len(cs), size=train_size, replace=False))
            sample = cs.codes[rows]
        index.train(sample)
    index.add_codeset(cs)
    return index

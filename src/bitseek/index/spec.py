"""Index factory strings: one line names the engine, its structure and its options.

Grammar (spaces around tokens ignored; engine names and option names are case-insensitive, option
*values* keep their case)::

    spec     := head ("," option)*
              | ENGINE ":" [BODY] ("," option)*      a prefixed engine; BODY is the engine's own text
    head     := "flat"                      exact Hamming scan
              | "ivf" NLIST                 inverted lists, needs train()
              | "mih" NHASH                 multi-index hashing, b = bits / NHASH
              | "multihash" NHASH "x" B     multi-index hashing, explicit substring length
              | "hnsw" M                    HNSW graph
              | "float-ip"                  exact inner product on float descriptors (needs dim)
              | "auto"                      engine and parameters picked by train() for a
                                            target_recall (``bitseek.index.faiss.auto``)
    option   := NAME "=" VALUE              an integer, or text for engines that take text
                                            (a host, a collection name)

Examples: ``"flat"``, ``"ivf1024,nprobe=16"``, ``"mih4"``, ``"multihash4x16,nflip=2"``,
``"hnsw32,ef_search=128"``, ``"float-ip"``, ``"faiss:BIVF1024_HNSW32,nprobe=8"`` (faiss's own binary
factory string, passed through), ``"milvus:uri=http://127.0.0.1:19530,collection=MyColl"`` (a
prefixed engine with text options). ``index.spec`` gives back the canonical form.

Importing this module does not import faiss; parsing a spec imports the engine it names.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from bitseek.errors import ConfigError, InputError
from bitseek.index.api import SearchIndex, engine_class, engine_names, load_index

__all__ = [
    "ParsedSpec",
    "parse_spec",
    "make_index",
    "list_backends",
    "list_engines",
    "index_from_codeset",
    "load_index",
]

_ADD_BLOCK = 1 << 16
_EXAMPLES = ("flat", "ivf1024", "mih4", "multihash4x16", "hnsw32", "float-ip")
_PREFIXED = re.compile(r"([A-Za-z][A-Za-z0-9_-]*):(.*)", re.S)


@dataclass(frozen=True)
class ParsedSpec:
    cls: type[SearchIndex]
    params: dict[str, Any]
    options: dict[str, Any]


def list_engines() -> list[str]:
    """Engine names known to ``load`` and to the spec grammar."""
    return engine_names()


list_backends = list_engines  # the name before the engine split


def _pattern_engines() -> list[type[SearchIndex]]:
    """Engines addressed by a head pattern (``ivf1024``), imported on demand."""
    out = []
    for name in engine_names():
        cls = engine_class(name)
        if getattr(cls, "name_patterns", ()):
            out.append(cls)
    return out


def parse_spec(spec: str) -> ParsedSpec:
    """Split a factory string into engine class, structural parameters and options."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"index spec must be a non-empty string like 'flat' or 'ivf1024,nprobe=16', got {spec!r}")
    text = spec.strip()
    m = _PREFIXED.fullmatch(text)
    if m and m.group(1).lower() in engine_names():
        return _parse_prefixed(spec, m.group(1).lower(), m.group(2))
    head, *opts = [t.strip() for t in text.split(",")]
    key = re.sub(r"\s+", "", head).lower()
    for cls in _pattern_engines():
        for pattern in cls.name_patterns:  # type: ignore[attr-defined]
            hit = re.fullmatch(pattern, key)
            if hit:
                params = {k: int(v) for k, v in hit.groupdict().items() if v is not None}
                return ParsedSpec(cls, params, _parse_options(spec, cls, opts))
    stems = {re.sub(r"[0-9]+", "", e): e for e in _EXAMPLES}  # compare shapes, not numbers
    near = difflib.get_close_matches(re.sub(r"[0-9]+", "", key), list(stems), n=1)
    hint = f"; did you mean {stems[near[0]]!r}?" if near else ""
    prefixed = ", ".join(f"{n}:…" for n in engine_names() if not getattr(engine_class(n), "name_patterns", ()))
    raise ConfigError(
        f"unknown index engine {head!r} in spec {spec!r}{hint} (forms: flat, ivf<nlist>, mih<nhash>, "
        f"multihash<nhash>x<b>, hnsw<M>, float-ip, auto{', ' + prefixed if prefixed else ''})"
    )


def _parse_prefixed(spec: str, name: str, rest: str) -> ParsedSpec:
    cls = engine_class(name)
    tokens = [t.strip() for t in rest.split(",")] if rest.strip() else []
    body = ""
    if tokens and "=" not in tokens[0]:
        body = tokens.pop(0)
    params: dict[str, Any] = {"factory": body} if name == "faiss" else ({"body": body} if body else {})
    if name == "faiss" and not body:
        raise ConfigError(f"index spec {spec!r}: faiss: needs a binary factory string, e.g. 'faiss:BIVF1024'")
    # the options a prefixed engine takes may depend on its body (faiss:BIVF… has nprobe)
    options_for = getattr(cls, "options_for", None)
    allowed = options_for(params) if callable(options_for) else getattr(cls, "options_spec", {})
    return ParsedSpec(cls, params, _parse_options(spec, cls, tokens, allowed))


def _parse_options(
    spec: str, cls: type[SearchIndex], opts: list[str], allowed: dict[str, Any] | None = None
) -> dict[str, Any]:
    allowed = getattr(cls, "options_spec", {}) if allowed is None else allowed
    out: dict[str, Any] = {}
    for opt in opts:
        key, sep, value = opt.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not key:
            raise ConfigError(f"index spec {spec!r}: option {opt!r} must look like name=value")
        if key not in allowed:
            valid = ", ".join(sorted(allowed)) or "none"
            near = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"index spec {spec!r}: {cls.engine} has no option {key!r}{hint} (valid: {valid})")
        if key in out:
            raise ConfigError(f"index spec {spec!r}: option {key!r} given twice")
        default = allowed[key][0] if isinstance(allowed[key], tuple) else allowed[key]
        if isinstance(default, bool) or not isinstance(default, int):  # a text option: kept as written
            if not value:
                raise ConfigError(f"index spec {spec!r}: option {key} needs a value")
            out[key] = value
            continue
        if not re.fullmatch(r"[0-9]+", value):
            raise ConfigError(f"index spec {spec!r}: option {key} needs a non-negative integer, got {value!r}")
        out[key] = int(value)
    return out


def make_index(
    spec: str, bits: int | None = None, *, dim: int | None = None, target_recall: float | None = None
) -> SearchIndex:
    """Build an empty index from a factory string: ``make_index("ivf1024,nprobe=16", bits=64)``.

    Binary engines take ``bits`` (code length); ``float-ip`` takes ``dim`` (descriptor length).
    ``target_recall`` is for ``"auto"`` (``make_index("auto", bits=64, target_recall=0.99)``): the
    index picks its engine and parameters when trained (``bitseek.index.faiss.auto``).
    """
    p = parse_spec(spec)
    if target_recall is not None:
        if p.cls.engine != "auto":
            raise ConfigError(f"index spec {spec!r}: target_recall= needs the 'auto' spec (a {p.cls.engine} index "
                              "has fixed parameters)")
        if "target_recall" in p.options:
            raise ConfigError(f"index spec {spec!r}: target_recall given in the spec and as an argument")
        p = ParsedSpec(p.cls, p.params, {**p.options, "target_recall": target_recall})
    if p.cls.metric == "hamming":
        if bits is None:
            raise ConfigError(f"index spec {spec!r}: a binary engine needs bits= (the code length)")
        if dim is not None and dim != bits:
            raise ConfigError(f"index spec {spec!r}: dim={dim} contradicts bits={bits}")
        return p.cls(bits, p.params, p.options)  # type: ignore[call-arg]
    if dim is None:
        raise ConfigError(f"index spec {spec!r}: {p.cls.engine} needs dim= (the descriptor length), not bits=")
    if bits is not None:
        raise ConfigError(f"index spec {spec!r}: {p.cls.engine} holds float descriptors; pass dim=, not bits=")
    return p.cls(dim, p.params, p.options)  # type: ignore[call-arg]


def index_from_codeset(
    codeset: Any, spec: str = "flat", train_size: int | None = None, seed: int = 0,
    target_recall: float | None = None,
) -> SearchIndex:
    """Build an index holding a CodeSet (object or file path), training it on the codes if needed.

    ``train_size`` caps the training sample for trained engines (a seeded random subset);
    ``target_recall`` goes to an ``auto`` spec (which tunes itself on that sample).
    """
    from bitseek.codes import CodeSet

    cs = CodeSet.load(codeset) if isinstance(codeset, (str, os.PathLike)) else codeset
    if not isinstance(cs, CodeSet):
        raise InputError(f"index_from_codeset(): expected a CodeSet or a path, got {type(cs).__name__}")
    if train_size is not None and (isinstance(train_size, bool) or int(train_size) < 1):
        raise InputError(f"index_from_codeset(): train_size must be a positive integer, got {train_size!r}")
    index = make_index(spec, bits=cs.bits, target_recall=target_recall)
    if not index.is_trained:
        sample = cs.codes
        if train_size is not None and train_size < len(cs):
            rows = np.sort(np.random.default_rng(seed).choice(len(cs), size=int(train_size), replace=False))
            sample = cs.codes[rows]
        index.train(sample)
    if cs.bits != index.dim:  # the check add_codeset makes, before any block goes in
        raise InputError(f"index_from_codeset(): code set has {cs.bits}-bit codes, the index holds {index.dim}-bit")
    from bitseek.progress import progress

    step = _ADD_BLOCK  # blocks give the same index as one add, and a progress bar for large code sets
    for s in progress(range(0, len(cs), step), desc="index", unit="block", show=len(cs) > step):
        meta = {k: v[s : s + step] for k, v in cs.meta.items()} or None
        index.add(cs.codes[s : s + step], cs.ids[s : s + step], meta=meta)
    return index

"""``bitseek index`` and ``bitseek search``: build an index from a code (or feature) file, search it.

``search`` prints a table a person can read (rank, id, distance and the item's metadata where the
index keeps it) or, with ``--json``, one JSON document for programs. Rows are never padded: a query
with fewer hits than ``-k`` shows the hits it has. With ``--radius``, ``-k`` caps each query's hits
at the k best (without ``-k`` every hit within the radius is listed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bitseek.cli.common import non_negative_int as _non_negative
from bitseek.cli.common import positive_int as _positive
from bitseek.errors import InputError

__all__ = ["register", "cmd_index", "cmd_search"]

_INDEX_MAGIC = b"BITSEEK-INDEX"
_CODESET_MAGIC = b"BITSEEK-CODESET"
_FEATSET_MAGIC = b"BITSEEK-FEATSET"


def _kind(path: str, flag: str) -> str:
    """What a file is, by its magic: "index", "codes", "features" or "npy"."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{flag} {path}: no such file")
    with p.open("rb") as fh:
        head = fh.read(16)
    if head.startswith(_INDEX_MAGIC):
        return "index"
    if head.startswith(_CODESET_MAGIC):
        return "codes"
    if head.startswith(_FEATSET_MAGIC):
        return "features"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    raise InputError(f"{flag} {path}: not a bitseek code set, feature set, index or .npy file")


# --------------------------------------------------------------------------- index


def cmd_index(args: argparse.Namespace) -> int:
    from bitseek.index import index_from_codeset, make_index

    from bitseek.encode.shards import load_shards, merge_shards

    paths = list(args.codes)
    kinds = {_kind(p, "--codes") for p in paths}
    for p in paths:
        kind = _kind(p, "--codes")
        if kind == "index":
            raise InputError(f"--codes {p}: this is an index file already; pass it to `bitseek search --index`")
        if kind == "npy":
            raise InputError(f"--codes {p}: a .npy array has no ids; write a CodeSet (bitseek encode --out)")
    if len(kinds) > 1:
        raise InputError(f"--codes: {', '.join(paths)} mix code sets and feature sets")
    kind = kinds.pop()
    t0 = time.perf_counter()
    if kind == "codes":
        spec = args.spec or "flat"
        source = paths[0] if len(paths) == 1 else merge_shards(paths)  # the shards of one encode job, as one set
        target = _recall("--target-recall", args.target_recall)
        if target is not None and spec.split(",")[0].strip().lower() != "auto":
            raise InputError(f"--target-recall: needs --spec auto (the {spec!r} spec has fixed parameters)")
        index = index_from_codeset(source, spec, train_size=args.train_size, seed=args.seed, target_recall=target)
    else:
        from bitseek.progress import progress

        spec = args.spec or "float-ip"
        sets = load_shards(paths)  # memory-mapped; added shard by shard, block by block
        index = make_index(spec, dim=sets[0].dim)  # type: ignore[union-attr]
        for fs in sets:
            chunks = fs.iter_chunks()  # type: ignore[union-attr]
            for rows, block in progress(chunks, total=-(-len(fs) // 65536), desc="index", unit="block"):
                meta = {k: v[rows] for k, v in fs.meta.items()} or None
                index.add(block, fs.ids[rows], meta=meta)
    index.save(args.out)
    print(f"indexed {len(index)} items ({index.spec}) in {time.perf_counter() - t0:.1f}s -> {args.out}")
    tuning = getattr(index, "tuning", None)
    if tuning:
        from bitseek.index.faiss.auto import describe_tuning

        print(describe_tuning(tuning))
    return 0


# --------------------------------------------------------------------------- search


def _read_queries(path: str, index: Any) -> tuple[np.ndarray, np.ndarray, dict[str, list[Any]]]:
    """(queries, query ids, query metadata) from a CodeSet, FeatureSet or .npy file."""
    kind = _kind(path, "--queries")
    if kind == "index":
        raise InputError(f"--queries {path}: this is an index file; pass it to --index and give query codes here")
    if kind == "codes":
        from bitseek.codes import CodeSet

        cs = CodeSet.load(path)
        return cs.codes, cs.ids, cs.meta
    if kind == "features":
        from bitseek.codes import FeatureSet

        fs = FeatureSet.load(path)
        return fs.float32(), fs.ids, fs.meta
    try:
        q = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise InputError(f"--queries {path}: cannot read it as a plain .npy array ({e})") from None
    if q.ndim == 1:
        q = q.reshape(1, -1)
    return q, np.arange(len(q), dtype=np.int64), {}


def _radius(text: str | None, metric: str) -> int | float | None:
    if text is None:
        return None
    try:
        return int(text) if metric == "hamming" else float(text)
    except ValueError:
        want = "a whole number of bits" if metric == "hamming" else "a similarity threshold"
        raise InputError(f"--radius {text!r}: expected {want}") from None


def _hits(index: Any, q: np.ndarray, args: argparse.Namespace, params: dict[str, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    radius = _radius(args.radius, index.metric)
    if radius is None:
        dist, ids = index.search(q, args.k or 10, **params)
        keep = ids >= 0  # no padding rows when k exceeds what the index holds
        return [(d[m], i[m]) for d, i, m in zip(dist, ids, keep)]
    res = index.range_search(q, radius, **params)
    if args.k is not None:
        res = res.cap(args.k)
    return list(res)


def _number(x: Any, metric: str) -> int | float:
    return int(x) if metric == "hamming" else round(float(x), 6)


def _table(rows: list[list[str]], header: list[str]) -> str:
    """Plain aligned columns: numbers right-aligned, text left-aligned."""
    widths = [max(len(h), *(len(r[c]) for r in rows)) if rows else len(h) for c, h in enumerate(header)]
    numeric = [c < 3 for c in range(len(header))]
    def line(cells: list[str]) -> str:
        return "  ".join(s.rjust(w) if n else s.ljust(w) for s, w, n in zip(cells, widths, numeric)).rstrip()
    return "\n".join([line(header), *(line(r) for r in rows)])


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def cmd_search(args: argparse.Namespace) -> int:
    from bitseek.index import load_index

    if args.collection is not None:
        from bitseek.cli.collection import cmd_search_collection

        return cmd_search_collection(args)
    for flag, value in (("--index", args.index), ("--queries", args.queries)):
        if value is None:
            raise InputError(f"search: {flag} is required (or search a collection: --collection DIR --video/--image/--id)")
    kind = _kind(args.index, "--index")
    if kind != "index":
        what = {"codes": "a code set", "features": "a feature set", "npy": "a .npy array"}[kind]
        raise InputError(f"--index {args.index}: this is {what}; build an index first (bitseek index --codes FILE --out X)")
    index = load_index(args.index, mmap=args.mmap)
    q, qids, qmeta = _read_queries(args.queries, index)
    params: dict[str, Any] = {}
    if args.recall is not None:
        if index.engine != "auto":
            raise InputError(f"--recall: only an auto index (bitseek index --spec auto) maps a recall to its parameters; "
                             f"a {index.spec} index takes --nprobe/--ef/--nflip")
        params["recall"] = _recall("--recall", args.recall)
    for flag, key, value in (("--nprobe", "nprobe", args.nprobe), ("--ef", "ef_search", args.ef),
                             ("--nflip", "nflip", args.nflip)):
        if value is None:
            continue
        if key not in index.search_params:
            takes = ", ".join(sorted(index.search_params)) or "no search-time options"
            raise InputError(f"{flag}: a {index.spec} index has no {key} (it takes: {takes})")
        params[key] = value
    t0 = time.perf_counter()
    hits = _hits(index, q, args, params)
    ms = (time.perf_counter() - t0) * 1000
    results = []
    for n, (qid, (dist, ids)) in enumerate(zip(qids.tolist(), hits)):
        item: dict[str, Any] = {"query": int(qid)}
        if qmeta:
            item["query_meta"] = {k: v[n] for k, v in qmeta.items()}
        item["ids"] = ids.tolist()
        item["distances"] = [_number(d, index.metric) for d in dist]
        meta = index.metadata(ids) if ids.size else {}
        if meta:
            item["meta"] = meta
        results.append(item)
    doc = {"index": str(args.index), "engine": index.engine, "spec": index.spec, "metric": index.metric,
           "k": args.k if args.radius is not None else (args.k or 10), "radius": _radius(args.radius, index.metric),
           "params": params, "search_ms": round(ms, 3), "results": results}
    if args.out:
        from bitseek.atomic import atomic_write_text

        atomic_write_text(args.out, json.dumps(doc) + "\n")
    if args.json:
        print(json.dumps(doc))
        return 0
    what = f"within radius {doc['radius']}" + (f", best {args.k}" if args.k else "") if args.radius is not None \
        else f"top {doc['k']}"
    print(f"{index.spec} index, {len(index)} items; {len(results)} queries, {what}, {ms:.1f} ms")
    label = "distance" if index.metric == "hamming" else "score"
    for item in results:
        qm = " ".join(f"{k}={_text(v)}" for k, v in item.get("query_meta", {}).items())
        print(f"\nquery {item['query']}{'  ' + qm if qm else ''}: {len(item['ids'])} hit(s)")
        if not item["ids"]:
            continue
        cols = list(item.get("meta", {}))
        rows = [[str(r + 1), str(i), str(d), *(_text(item["meta"][c][r]) for c in cols)]
                for r, (i, d) in enumerate(zip(item["ids"], item["distances"]))]
        print(_table(rows, ["rank", "id", label, *cols]))
    if args.out:
        print(f"\nresults -> {args.out}")
    return 0


# --------------------------------------------------------------------------- parser


def _recall(flag: str, text: str | None) -> float | None:
    """A recall flag's value in (0, 1]; a bad one is a one-line error naming the flag."""
    if text is None:
        return None
    from bitseek.index.faiss.auto import check_recall

    return check_recall(text, flag)


def register(sub: Any) -> None:
    """Add the ``index`` and ``search`` sub-commands to the main parser's sub-parsers."""
    help_ = "build a search index from a CodeSet (or FeatureSet) file"
    sp = sub.add_parser("index", help=help_, description=help_)
    sp.set_defaults(func=cmd_index)
    sp.add_argument("--codes", required=True, nargs="+",
                    help="CodeSet file (bitseek encode --out), or a FeatureSet for float-ip; or every shard file "
                         "of one `bitseek encode --shard` job")
    sp.add_argument("--spec", default=None,
                    help="index factory string: flat (default for codes), ivf1024,nprobe=16, mih4, hnsw32, "
                         "faiss:BIVF1024_HNSW32, float-ip (default for features)")
    sp.add_argument("--train-size", type=_positive, default=None, metavar="N",
                    help="train IVF on a seeded random sample of N codes (default: all of them)")
    sp.add_argument("--seed", type=int, default=0, help="seed of the training sample")
    sp.add_argument("--target-recall", default=None, metavar="R",
                    help="with --spec auto: the distance-recall@100 in (0, 1] to tune for (default 0.99)")
    sp.add_argument("--out", required=True, help="index file to write")

    help_ = "search an index with query codes (top-k or radius); prints a table, or JSON with --json"
    sp = sub.add_parser("search", help=help_, description=help_)
    sp.set_defaults(func=cmd_search)
    sp.add_argument("--index", default=None, help="index file (bitseek index --out)")
    sp.add_argument("--queries", default=None, help="CodeSet / FeatureSet file, or .npy codes (rows are the ids)")
    from bitseek.cli.collection import add_search_args

    add_search_args(sp)
    sp.add_argument("-k", "--k", type=_positive, default=None,
                    help="hits per query (default 10); with --radius: keep at most the k best")
    sp.add_argument("--radius", default=None,
                    help="every item within this Hamming distance (or with at least this score, float-ip)")
    sp.add_argument("--nprobe", type=_positive, default=None, help="IVF: lists scanned per query, this call only")
    sp.add_argument("--ef", type=_positive, default=None, help="HNSW: search width (ef_search), this call only")
    sp.add_argument("--nflip", type=_non_negative, default=None, help="multi-index hashing: bit flips per table")
    sp.add_argument("--recall", default=None, metavar="R",
                    help="auto index: the recall in (0, 1] this call needs (picks nprobe from the measured curve)")
    sp.add_argument("--mmap", action="store_true",
                    help="flat, ivf or auto index: search it straight from the file, without loading it into memory")
    sp.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    sp.add_argument("--out", default=None, help="also write the JSON results to this file")

"""``bitseek ingest`` and ``bitseek search --collection``: build a collection from files, search it by example.

``search --collection DIR`` takes exactly one query (``--video``, ``--image`` or ``--id``) and prints a
table (rank, id, distance or score, kind, best-matching time, path) or, with ``--json``, one JSON
document whose ``results`` list holds ``{"id", "distance" | "score", "path", "kind", "time"}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from bitseek.cli.common import positive_int as _positive
from bitseek.errors import InputError

__all__ = ["register", "add_search_args", "cmd_ingest", "cmd_search_collection"]


def cmd_ingest(args: argparse.Namespace) -> int:
    from bitseek.ingest.run import ingest

    try:
        rep = ingest(args.sources, args.collection, frames=args.frames, sampling=args.sampling,
                     backbone=args.backbone, model=args.model, prune=args.prune)
    except KeyboardInterrupt:
        print("interrupted; every item finished so far is kept; run the same command again to continue",
              file=sys.stderr)
        return 130
    for path, reason in rep.failed:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    for path, other in rep.duplicates:
        print(f"duplicate {path}: same content as item {other}", file=sys.stderr)
    if args.json:
        print(json.dumps(rep.to_dict()))
        return 0
    rate = rep.frames / rep.seconds if rep.seconds > 0 else 0.0
    parts = [f"{rep.unchanged} unchanged"]
    for n, what in ((len(rep.duplicates), "duplicate(s)"), (rep.moved, "moved"), (rep.replaced, "replaced"),
                    (rep.pruned, "pruned"), (len(rep.failed), "skipped as unreadable"),
                    (rep.ignored, "non-media file(s) ignored")):
        if n:
            parts.append(f"{n} {what}")
    print(f"ingested {rep.added} new item(s), {rep.frames} frames in {rep.seconds:.1f}s ({rate:.1f} frames/s); "
          f"{', '.join(parts)} -> {args.collection}: {rep.items} items, model {rep.model}")
    return 0


def _hit_row(rank: int, h: Any) -> list[str]:
    value = h.distance if h.distance is not None else h.score
    t = "" if h.time is None else f"{h.time:.2f}s"
    return [str(rank), str(h.id), str(value), h.kind, t, h.path]


def cmd_search_collection(args: argparse.Namespace) -> int:
    from bitseek.collection import Collection

    for flag in ("index", "queries"):
        if getattr(args, flag, None):
            raise InputError(f"--{flag}: not used with --collection (the collection holds its own index)")
    given = [f for f, v in (("--video", args.video), ("--image", args.image), ("--id", args.id)) if v is not None]
    if len(given) != 1:
        raise InputError("search --collection: give exactly one query: --video FILE, --image FILE or --id N"
                         + (f" (got {' and '.join(given)})" if given else ""))
    for flag, value in (("--video", args.video), ("--image", args.image)):
        if value is not None and not Path(value).is_file():
            raise InputError(f"{flag} {value}: no such file")
    col = Collection.open(args.collection)
    try:
        radius: float | None = None
        if args.radius is not None:
            try:
                radius = float(args.radius)
            except ValueError:
                raise InputError(f"--radius {args.radius!r}: expected a number") from None
            if col.model.metric == "hamming":
                if radius != int(radius) or radius < 0:
                    raise InputError(f"--radius {args.radius!r}: expected a whole number of bits (this collection "
                                     f"holds {col.model.label} codes)")
                radius = int(radius)
        k = args.k or (1000 if radius is not None else 10)
        t0 = time.perf_counter()
        if args.video is not None:
            hits, query = col.search_video(args.video, k, radius), {"video": str(args.video)}
        elif args.image is not None:
            hits, query = col.search_image(args.image, k, radius), {"image": str(args.image)}
        else:
            hits, query = col.search_id(args.id, k, radius), {"id": int(args.id)}
        ms = (time.perf_counter() - t0) * 1000
        doc = {"collection": str(args.collection), "model": col.model.label, "metric": col.model.metric,
               "items": len(col), "query": query, "k": k, "radius": radius, "search_ms": round(ms, 3),
               "results": [h.to_dict() for h in hits]}
    finally:
        col.close()
    if args.out:
        from bitseek.atomic import atomic_write_text

        atomic_write_text(args.out, json.dumps(doc) + "\n")
    if args.json:
        print(json.dumps(doc))
        return 0
    what = f"within {radius}" if radius is not None else f"top {k}"
    qtext = next(iter(query.values()))
    print(f"{doc['items']} items, model {doc['model']}; query {qtext}: {len(hits)} hit(s), {what}, {ms:.1f} ms")
    if hits:
        from bitseek.cli.index import _table

        label = "distance" if col.model.metric == "hamming" else "score"
        print(_table([_hit_row(r + 1, h) for r, h in enumerate(hits)], ["rank", "id", label, "kind", "time", "path"]))
    return 0


def add_search_args(sp: argparse.ArgumentParser) -> None:
    """The ``search --collection`` flags, added to the ``search`` command of ``cli/index.py``."""
    sp.add_argument("--collection", default=None, metavar="DIR",
                    help="search a collection (bitseek ingest) by example: with --video, --image or --id")
    sp.add_argument("--video", default=None, metavar="FILE", help="--collection: query by a video file")
    sp.add_argument("--image", default=None, metavar="FILE", help="--collection: query by an image file")
    sp.add_argument("--id", type=int, default=None, metavar="N",
                    help="--collection: items like item N (N itself is left out)")


def register(sub: Any) -> None:
    """Add the ``ingest`` sub-command."""
    help_ = "add videos and images (files or folders) to a collection: catalog, features, index"
    sp = sub.add_parser("ingest", help=help_, description=help_)
    sp.set_defaults(func=cmd_ingest, parser=sp)
    sp.add_argument("sources", nargs="+", metavar="SRC", help="video/image files or folders (walked recursively)")
    sp.add_argument("--collection", required=True, metavar="DIR", help="collection folder (created if new)")
    sp.add_argument("--frames", type=_positive, default=None, metavar="N",
                    help="frames sampled per video (default 16; fixed when the collection is created)")
    sp.add_argument("--sampling", choices=["uniform", "shots"], default=None,
                    help="evenly spaced frames, or spread over the shots TransNetV2 finds (default uniform; "
                         "fixed when the collection is created)")
    sp.add_argument("--backbone", default=None,
                    help="frame feature extractor (default efficientnet_lite0; fixed when the collection is created)")
    sp.add_argument("--model", default=None,
                    help="how items are encoded: float (exact cosine, the default), itq or itqBITS (ITQ fitted on "
                         "the collection), or a trained model folder (bitseek train on this collection); "
                         "switching re-encodes every item")
    sp.add_argument("--prune", action="store_true", help="also remove items whose files are gone")
    sp.add_argument("--json", action="store_true", help="print the run's report as JSON")

"""The ``serve`` command: the HTTP API and web page over a collection (``bitseek ingest`` builds one)."""

from __future__ import annotations

import argparse
import os
from typing import Callable

from bitseek.errors import BitseekError

AddCommand = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (v > 0 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return v


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"{v} is not a port (0..65535; 0 = any free port)")
    return v


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401  (uploads)
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise BitseekError(f"serve needs the 'serve' extra ({e.name} is missing): pip install 'bitseek[serve]'") \
            from None
    from bitseek.serve.app import ServeSettings
    from bitseek.serve.server import bind, serve

    token = args.token if args.token is not None else os.environ.get("BITSEEK_SERVE_TOKEN") or None
    kwargs = dict(max_upload_bytes=int(args.max_upload_mb * 2**20), max_k=args.max_k, timeout_s=args.timeout,
                  token=token, max_image_pixels=args.max_image_pixels)
    if args.default_k is not None:
        kwargs["default_k"] = args.default_k
    elif args.max_k < 10:
        kwargs["default_k"] = args.max_k
    if args.workers is not None:
        kwargs["workers"] = args.workers
    settings = ServeSettings(**kwargs)  # type: ignore[arg-type]
    sock = bind(args.host, args.port)  # a taken port fails before the collection loads
    try:
        from bitseek.collection import Collection

        col = Collection.open(args.collection)
        try:
            warm = getattr(col, "frame_encoder", None)  # load the extractor now, not on the first upload
            if callable(warm):
                warm()
            serve(col, settings, host=args.host, sock=sock, access_log=not args.quiet)
        finally:
            col.close()
    finally:
        sock.close()
    return 0


def register(add: AddCommand) -> None:
    """Add ``serve`` to the main parser (``add`` is cli/main.py's sub-command helper)."""
    from bitseek.cli.common import positive_int

    sp = add("serve", cmd_serve, "serve a collection over HTTP: search API, thumbnails, a web page at / and API "
                                 "docs at /docs")
    sp.add_argument("--collection", required=True, metavar="DIR", help="collection folder (bitseek ingest)")
    sp.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 exposes it: "
                         "give a --token then)")
    sp.add_argument("--port", type=_port, default=8000, help="TCP port (default 8000; 0 = any free port)")
    sp.add_argument("--token", default=None,
                    help="require 'Authorization: Bearer TOKEN' on the API (default: $BITSEEK_SERVE_TOKEN, "
                         "which keeps it out of the process list; none = open)")
    sp.add_argument("--max-upload-mb", type=_positive_float, default=200.0, metavar="MB",
                    help="largest request body accepted, in MiB; larger ones get 413 (default 200)")
    sp.add_argument("--max-k", type=positive_int, default=1000, help="largest k a request may ask (default 1000)")
    sp.add_argument("--default-k", type=positive_int, default=None, help="k when a request gives none (default 10)")
    sp.add_argument("--timeout", type=_positive_float, default=60.0, metavar="S",
                    help="seconds one search (decode + encode + index) may take before the answer is 503 "
                         "(default 60)")
    sp.add_argument("--workers", type=positive_int, default=None,
                    help="searches run in parallel on this many threads (default: cores, 2..8)")
    sp.add_argument("--max-image-pixels", type=positive_int, default=50_000_000, metavar="N",
                    help="largest image (width x height) a query may declare (default 50,000,000)")

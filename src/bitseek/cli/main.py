"""The ``bitseek`` console script.

Sub-commands follow the data flow: ``train`` -> ``eval``/``encode`` -> ``index`` -> ``search``;
``eval-codes`` evaluates saved codes; ``demo`` runs the built-in benchmarks end to end.
The seeds' invocation shapes work: ``--config FILE`` (ConMH), ``--cfg FILE`` (CSCE-Net), trailing
``key.sub=value`` overrides, and CVNet/yacs-style ``KEY VALUE`` pairs (``TRAIN.EPOCHS 5``).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable


from bitseek.cli.common import add_config_args as _add_config_args
from bitseek.cli.common import load_cfg as _load_cfg
from bitseek.cli.common import normalise_overrides as _normalise_overrides
from bitseek.cli.common import positive_int as _positive_int
from bitseek.errors import BitseekError


# --------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    from bitseek import pipeline

    cfg = _load_cfg(args)
    if args.new_run:
        from bitseek.train.checkpoint import next_free_run_dir

        fresh = next_free_run_dir(cfg.out_dir)
        if fresh != cfg.out_dir:
            print(f"{cfg.out_dir} is taken; training into {fresh}", file=sys.stderr)
        cfg.train.out_dir = str(fresh)
    from bitseek.train.dist import is_main, process_group

    t0 = time.perf_counter()
    with process_group():  # under torchrun: one group for the job, destroyed when training ends
        pipeline.train(cfg)
        if is_main():
            print(f"trained {cfg.name} in {time.perf_counter() - t0:.1f}s -> {cfg.out_dir}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from bitseek.models.convert import load_official
    from bitseek.train.checkpoint import save_model

    if args.model:  # no experiment file: the model section comes from model.* overrides alone
        from bitseek.config import apply_overrides
        from bitseek.registry import MODELS

        raw: dict[str, Any] = {"model": {}}
        apply_overrides(raw, _normalise_overrides(list(args.overrides)))
        other = sorted(set(raw) - {"model"})
        if other:
            raise BitseekError(f"convert --model: only model.* overrides apply here, got section(s) {other}")
        model_cfg = MODELS.config(args.model, **raw["model"])
    else:
        model_cfg = _load_cfg(args).model
    model = load_official(args.src, model_cfg, allow_pickle=args.allow_pickle)
    save_model(args.out, model, model_cfg, extra={"converted_from": str(args.src)})
    print(f"converted {args.src} -> {args.out}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    if args.what == "configs":
        from bitseek.config.experiment import packaged_configs

        root = packaged_configs()
        for path in sorted(root.rglob("[!_]*.yaml")):
            print(path.relative_to(root).with_suffix("").as_posix())
        return 0
    from bitseek.registry import REGISTRIES

    for entry in REGISTRIES[args.what].entries():
        print(f"{entry.name:<20} {entry.summary}".rstrip() if args.verbose else entry.name)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if args.kind == "images":
        from bitseek.demo.images import run_image_demo

        run_image_demo(Path(args.out), full=args.full, seed=args.seed, train_scale=args.train_scale)
    elif args.kind == "landmarks":
        from bitseek.demo.landmarks import run_landmark_demo

        run_landmark_demo(Path(args.out), full=args.full, seed=args.seed, train_scale=args.train_scale)
    else:
        from bitseek.demo.video import run_video_demo

        run_video_demo(Path(args.out), full=args.full, seed=args.seed, train_scale=args.train_scale)
    return 0


# --------------------------------------------------------------------------- parser


def _global_flags(p: argparse.ArgumentParser, suppress: bool, verbose: bool = True) -> None:
    """--debug/--quiet/--verbose, accepted before or after the command (after: no default, so no overwrite)."""
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    p.add_argument("--debug", action="store_true", default=d(False),
                   help="show the Python traceback of an error (also BITSEEK_DEBUG=1)")
    p.add_argument("-q", "--quiet", action="store_true", default=d(False),
                   help="only errors on stderr; no progress bars")
    if verbose:
        p.add_argument("-v", "--verbose", dest="log_verbose", action="store_true", default=d(False),
                       help="debug-level log messages")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bitseek", description="Learned binary codes for video and image retrieval.")
    p.add_argument("--version", action="version", version=f"bitseek {__import__('bitseek').__version__}")
    _global_flags(p, suppress=False)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        _global_flags(sp, suppress=True, verbose=name != "list")  # `list -v` already means descriptions
        sp.set_defaults(func=fn, parser=sp)
        return sp

    sp = add("demo", cmd_demo, "run a built-in benchmark end to end and write a report folder")
    sp.add_argument("kind", nargs="?", default="video", choices=["video", "images", "landmarks"])
    sp.add_argument("--out", default="demo-out", help="report folder")
    sp.add_argument("--full", action="store_true",
                    help="3x the training and, for video, WSCH too (beyond the 5-minute budget)")
    sp.add_argument("--train-scale", type=_positive_int, default=None, metavar="N",
                    help="train the deep models N times their demo epochs (default 1; 3 with --full)")
    sp.add_argument("--seed", type=int, default=0)

    sp = add("train", cmd_train, "train a model from an experiment config (resumes automatically)")
    _add_config_args(sp)
    sp.add_argument("--new-run", action="store_true",
                    help="train into a fresh folder (out_dir-2, -3, …) if out_dir already holds a run")

    from bitseek.cli import eval as eval_commands

    eval_commands.register(add, _add_config_args)

    from bitseek.cli import shards as shard_commands

    shard_commands.register(add)  # merge

    from bitseek.cli import index as index_commands

    index_commands.register(sub)  # index, search

    from bitseek.cli import data as data_commands

    data_commands.register(sub)  # data landmarks

    from bitseek.cli import serve as serve_commands

    serve_commands.register(add)

    from bitseek.cli import retrieval as retrieval_commands

    retrieval_commands.register(sub)  # retrieval test

    from bitseek.cli import collection as collection_commands

    collection_commands.register(sub)  # ingest (search --collection is a flag of search)

    sp = add("convert", cmd_convert, "import an official released checkpoint into a bitseek one (`bitseek list converters`)")
    which = sp.add_mutually_exclusive_group(required=True)
    which.add_argument("--config", "--cfg", dest="config",
                       help="experiment YAML file or packaged recipe holding the model section")
    which.add_argument("--model", help="registered model name, configured by model.* overrides alone "
                                       "(e.g. --model cvnet MODEL.DEPTH 101)")
    sp.add_argument("--gpu", default=None, help=argparse.SUPPRESS)
    sp.add_argument("overrides", nargs="*", help="key.sub=value overrides (anywhere on the line), or KEY VALUE pairs")
    sp.add_argument("--src", required=True, help="the authors' .pth/.pyth file")
    sp.add_argument("--allow-pickle", action="store_true",
                    help="load a file holding pickled objects that weights-only loading refuses; this runs any "
                         "code the file carries, so use it only for files from a source you trust")
    sp.add_argument("--out", required=True, help="checkpoint folder to write")

    sp = add("list", cmd_list, "list registered models, datasets, backbones, converters, index engines, "
                               "re-rankers, or the packaged configs")
    sp.add_argument("what", choices=["models", "datasets", "backbones", "converters", "engines", "rerankers",
                                     "configs"])
    sp.add_argument("-v", "--verbose", action="store_true", help="one line of description per entry")
    return p


_NUMBER = re.compile(r"^-\.?\d")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line with ``key=value`` overrides allowed anywhere, before or after options.

    argparse stops filling a ``nargs="*"`` positional at the first option, so overrides after an
    option come back as unknown arguments; they are appended in order. Anything else unknown is the
    sub-command's usage error (exit code 2).
    """
    args, extras = build_parser().parse_known_args(argv)
    if extras:
        unknown = [x for x in extras if x.startswith("-") and not _NUMBER.match(x)]
        if unknown or not hasattr(args, "overrides"):
            args.parser.error(f"unrecognized arguments: {' '.join(unknown or extras)}")
        args.overrides = [*args.overrides, *extras]
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one command. A user's mistake is one line on stderr and exit code 2; a traceback only with --debug."""
    import os

    from bitseek.progress import configure, setup_logging

    args = parse_args(argv)
    debug = bool(args.debug) or os.environ.get("BITSEEK_DEBUG", "") not in ("", "0")
    quiet = bool(args.quiet)
    setup_logging(-1 if quiet else 1 if getattr(args, "log_verbose", False) else 0)
    configure(quiet=quiet)

    def fail(message: str, code: int) -> int:
        if debug:
            import traceback

            traceback.print_exc()
        print(f"bitseek {args.command}: error: {message}", file=sys.stderr)
        return code

    try:
        rc = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return rc
    except BrokenPipeError:
        # `bitseek search … | head`: the reader is gone; stop quietly like any Unix tool
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141
    except BitseekError as e:
        return fail(str(e), 2)
    except OSError as e:
        if e.filename is None:
            raise
        where = f"{e.filename}" + (f" -> {e.filename2}" if e.filename2 else "")
        return fail(f"{where}: {e.strerror or e}", 2)
    except MemoryError:
        return fail("out of memory (an input file asking for a huge allocation is corrupt or crafted; "
                    "otherwise lower the batch size)", 2)
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint is kept and `bitseek train` resumes from it", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

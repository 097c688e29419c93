"""WSCH's 8-epoch demo preset with the batch order before commit 845c170 (both passes of an epoch share one shuffle).

A research script behind one statement in docs/results.md: whether the per-pass reshuffle (the video
audit's finding 2) explains an earlier, lower 8-epoch score. It patches ``Trainer._shuffle_seed`` so
every pass of an epoch uses pass 0's order, then trains and evaluates through
``diagnose_conmh_demo.deep_run`` exactly as the curve does. Example::

    python experiments/wsch_shared_pass_order.py --work /tmp/wsch-old-order
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import diagnose_conmh_demo as diagnose  # noqa: E402

from bitseek.data.base import load_data  # noqa: E402
from bitseek.demo.common import shallow_config  # noqa: E402
from bitseek.train import engine  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="folder for the benchmark and the run")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    fixed = engine.Trainer._shuffle_seed
    engine.Trainer._shuffle_seed = lambda self, epoch, pass_index: fixed(self, epoch, 0)  # type: ignore[method-assign]
    opts = {"root": str(args.work / "data" / "mnist-video-multi-shot"), "seed": 0}
    data = load_data(shallow_config("itq", diagnose.BITS, diagnose.DATASET, args.work, opts, 0).data)
    result = diagnose.deep_run("wsch", data, opts, args.work / "runs", [f"train.epochs={args.epochs}"])
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

"""``bitseek merge``: the shard files of one ``bitseek encode --shard`` job -> one code or feature set."""

from __future__ import annotations

import argparse
from typing import Any, Callable

__all__ = ["register", "cmd_merge"]


def cmd_merge(args: argparse.Namespace) -> int:
    from bitseek.encode.shards import merge_shards

    merged = merge_shards(args.shards)
    merged.save(args.out)
    print(f"merged {len(args.shards)} shard(s), {len(merged)} items -> {args.out}")
    return 0


def register(add: Callable[..., Any]) -> None:
    sp = add("merge", cmd_merge, "merge the shard files of one `bitseek encode --shard` job into one set")
    sp.add_argument("shards", nargs="+", help="every shard file (any order)")
    sp.add_argument("--out", required=True, help="merged .codes or .feats file to write")

"""Argument types and helpers every ``bitseek`` command module shares (one copy of each)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from bitseek.errors import BitseekError


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "--cfg", dest="config", required=True,
                   help="experiment YAML file, a packaged recipe (conmh/fcvid-64; `bitseek list configs`), "
                        "or the seeds' own ConMH configs/*.py / WSCH Json/*.json")
    p.add_argument("--gpu", default=None, help="GPU index (ConMH's flag); same as train.device=cuda:N")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides (anywhere on the line), or KEY VALUE pairs")


def normalise_overrides(items: list[str]) -> list[str]:
    """Accept ``a.b=c`` and yacs-style ``A.B c`` pairs (keys lower-cased)."""
    out: list[str] = []
    i = 0
    while i < len(items):
        it = items[i]
        if "=" in it:
            out.append(it)
            i += 1
        elif i + 1 < len(items) and "=" not in items[i + 1]:
            out.append(f"{it.lower()}={items[i + 1]}")
            i += 2
        else:
            raise BitseekError(f"override {it!r} has no value (use key.sub=value)")
    return out


def load_cfg(args: argparse.Namespace) -> Any:
    from bitseek.config import load_config

    overrides = normalise_overrides(list(args.overrides))
    if getattr(args, "gpu", None) is not None:
        overrides.append(f"train.device=cuda:{args.gpu}")
    return load_config(args.config, overrides)


def print_rows(rows: list[dict[str, Any]]) -> None:
    from bitseek.eval.report import markdown_table

    print(markdown_table(rows))


def load_npy(path: str, what: str) -> np.ndarray:
    """``np.load`` without pickles; every way a .npy can be wrong is a FileFormatError naming the file."""
    from bitseek.errors import FileFormatError

    p = Path(path)
    if not p.exists():
        raise FileFormatError(f"{p}: no such {what} file")
    if p.is_dir():
        raise FileFormatError(f"{p}: is a directory, expected a .npy {what} file")
    try:
        arr = np.load(p, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise FileFormatError(f"{p}: holds Python objects (a pickled object array); {what} must be a "
                                  "numeric array — refusing to unpickle it") from None
        raise FileFormatError(f"{p}: not a valid .npy file ({e})") from None
    except (EOFError, OSError) as e:
        raise FileFormatError(f"{p}: truncated or not a .npy file ({type(e).__name__}: {e})") from None
    if not isinstance(arr, np.ndarray):
        raise FileFormatError(f"{p}: expected one array, got {type(arr).__name__}")
    return arr


def int_list(text: str) -> list[int]:
    """``5,10,20`` -> [5, 10, 20]; anything else is an argparse usage error naming the flag."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers such as 5,10,20; got {text!r}") \
            from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one cut-off, got {text!r}")
    return values


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value

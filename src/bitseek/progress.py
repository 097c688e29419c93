"""Progress bars and log verbosity shared by every long loop (training, encoding, indexing, data builds).

A bar is drawn only when stderr is a terminal and the user did not ask for ``--quiet``, so logs
captured to a file or a CI console never fill with carriage-return lines. The CLI calls
:func:`configure` once; library users get the same behaviour by default.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Iterable

__all__ = ["configure", "enabled", "progress", "setup_logging"]

_QUIET = False


def configure(quiet: bool = False) -> None:
    """Turn every progress bar off (``--quiet``) or back to the terminal-only default."""
    global _QUIET
    _QUIET = quiet


def enabled() -> bool:
    """Bars are drawn on a terminal unless quiet (``BITSEEK_PROGRESS=0`` also turns them off)."""
    if _QUIET or os.environ.get("BITSEEK_PROGRESS", "").strip() in ("0", "false", "no"):
        return False
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def progress(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", leave: bool = False, show: bool = True) -> Any:
    """A tqdm bar (disabled off a terminal, with ``--quiet`` or with ``show=False``)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True,
                disable=not (show and enabled()), file=sys.stderr)


class _Short(logging.Formatter):
    """``bitseek: message`` for information, ``bitseek: warning: message`` for warnings and worse."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"bitseek: {record.levelname.lower()}: {msg}"
        return f"bitseek: {msg}"


def setup_logging(verbosity: int = 0) -> None:
    """Root ``bitseek`` logger to stderr: -1 quiet (errors only), 0 warnings+info, 1+ debug."""
    level = logging.ERROR if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    logger = logging.getLogger("bitseek")
    logger.setLevel(level)
    for h in list(logger.handlers):
        if getattr(h, "_bitseek", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s") if verbosity > 0 else _Short())
    handler._bitseek = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.propagate = False

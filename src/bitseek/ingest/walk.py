"""Which files an ingest looks at, what kind each is, and its content hash."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from bitseek.errors import InputError

__all__ = ["VIDEO_EXTS", "IMAGE_EXTS", "walk_sources", "guess_kind", "content_hash"]

VIDEO_EXTS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp",
                        ".ts", ".mts", ".m2ts", ".ogv", ".vob", ".gifv"})
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".jfif", ".ppm", ".pgm"})
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
                b"P6", b"P5")


def walk_sources(sources: Iterable[str | os.PathLike[str]], skip: Path | None = None) -> tuple[list[Path], int]:
    """Every media file under ``sources`` (files given by name are always taken), sorted; and how many
    files inside folders were passed over for not having a media extension.

    Hidden files and folders (a leading dot) are skipped inside folders, as is ``skip`` (the
    collection folder itself, when it sits inside a source).
    """
    out: list[Path] = []
    ignored = 0
    for src in sources:
        p = Path(os.path.expanduser(str(src)))
        if p.is_file():
            out.append(p.resolve())
        elif p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                d = Path(dirpath)
                dirnames[:] = sorted(n for n in dirnames if not n.startswith(".")
                                     and (skip is None or (d / n).resolve() != skip))
                for name in sorted(filenames):
                    if name.startswith("."):
                        continue
                    if Path(name).suffix.lower() in VIDEO_EXTS | IMAGE_EXTS:
                        out.append((d / name).resolve())
                    else:
                        ignored += 1
        else:
            raise InputError(f"SRC {src}: no such file or folder")
    seen: set[Path] = set()
    unique = [f for f in out if not (f in seen or seen.add(f))]  # type: ignore[func-returns-value]
    return unique, ignored


def guess_kind(path: Path) -> str:
    """``"image"`` or ``"video"``: by extension, else by the file's first bytes (anything else is tried as video)."""
    ext = path.suffix.lower()
    if ext in IMAGE_EXTS:
        return "image"
    if ext in VIDEO_EXTS:
        return "video"
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
    except OSError:
        return "video"
    if head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image"
    return "video"


def content_hash(path: Path) -> str:
    """SHA-256 of the file's bytes: the identity of a content, whatever its name."""
    from bitseek.weights import sha256_file

    return sha256_file(path)

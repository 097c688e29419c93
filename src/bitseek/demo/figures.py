"""Pictures for the demo reports: query items beside their top retrieved items and their distances."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from bitseek.errors import InputError

#: figure width in inches: a report page (about 1,100 px at the saving dpi), whatever the column count
PAGE_WIDTH_IN = 10.0


def tile_frames(frames: np.ndarray, n: int = 4, gap: int = 2) -> np.ndarray:
    """``n`` evenly spaced frames of a (T, H, W) clip in a near-square grid, ``gap`` px of white between.

    A square tile keeps each clip's cell as tall as it is wide, so a row of results fits a page
    without shrinking the frames to slivers (a 1 x 4 strip is four times wider than tall).
    """
    if frames.ndim != 3 or len(frames) == 0:
        raise InputError(f"tile_frames: expected a (T, H, W) clip, got shape {frames.shape}")
    n = max(1, min(n, len(frames)))
    idx = np.linspace(0, len(frames) - 1, n).round().astype(int)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    h, w = frames.shape[1:]
    white = np.iinfo(frames.dtype).max if np.issubdtype(frames.dtype, np.integer) else 1.0
    out = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap), white, dtype=frames.dtype)
    for k, i in enumerate(idx):
        r, c = divmod(k, cols)
        out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = frames[i]
    return out


def plot_retrievals(path: Path, queries: Sequence[np.ndarray], results: Sequence[Sequence[np.ndarray]],
                    relevant: Sequence[Sequence[bool | None]], query_titles: Sequence[str],
                    result_titles: Sequence[Sequence[str]], distances: Sequence[Sequence[float]] | None = None,
                    frames_per_clip: int = 4, title: str = "", rgb: bool = False) -> Path:
    """Grid: one row per query; the query clip (or image) first, then its top results.

    A result is framed green when it shares a label with the query, red otherwise and grey when
    ``relevant`` is None for it (an image the protocol ignores, e.g. revisitop's junk), and captioned
    with its rank, its distance to the query (``distances``, e.g. Hamming) and its title. Clips are
    (T, H, W) uint8 arrays shown as square tiles of ``frames_per_clip`` frames; images are (H, W), or
    (H, W, 3) RGB with ``rgb=True``.
    The figure is one page wide whatever the number of columns, with captions at a readable size.
    """
    from bitseek.eval.report import new_figure, save_png

    if distances is not None and [len(d) for d in distances] != [len(r) for r in results]:
        raise InputError("plot_retrievals: need one distance per result")

    def cell(x: np.ndarray) -> np.ndarray:
        return tile_frames(x, frames_per_clip) if x.ndim == 3 and not rgb else x

    rows, cols = len(queries), 1 + max(len(r) for r in results)
    first = cell(queries[0])
    aspect = first.shape[0] / first.shape[1]
    cell_w = PAGE_WIDTH_IN / cols
    fig = new_figure(figsize=(PAGE_WIDTH_IN, rows * (cell_w * aspect + 0.55) + 0.5))
    axes = fig.subplots(rows, cols, squeeze=False)
    font = 9 if cols <= 7 else 8
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.imshow(cell(queries[r]), cmap="gray", vmin=0, vmax=255 if queries[r].dtype == np.uint8 else 1)
                ax.set_title(query_titles[r], fontsize=font, fontweight="bold")
                color, width = "blue", 3
            elif c - 1 < len(results[r]):
                item = results[r][c - 1]
                ax.imshow(cell(item), cmap="gray", vmin=0, vmax=255 if item.dtype == np.uint8 else 1)
                dist = "" if distances is None else f"  d={_fmt(distances[r][c - 1])}"
                ax.set_title(f"#{c}{dist}\n{result_titles[r][c - 1]}", fontsize=font, linespacing=1.1)
                rel = relevant[r][c - 1]
                color, width = ("grey" if rel is None else "green" if rel else "red"), 3
            else:
                ax.axis("off")
                continue
            for s in ax.spines.values():
                s.set_edgecolor(color)
                s.set_linewidth(width)
    head = "queries (blue) and their top results: green shares a label, red does not"
    if any(v is None for row in relevant for v in row):
        head += ", grey is ignored"
    if distances is not None:
        head += "; d = distance to the query"
    fig.suptitle(f"{title}\n{head}" if title else head, fontsize=10)
    fig.tight_layout()
    save_png(fig, path, dpi=110)
    return path


def _fmt(d: float) -> str:
    return str(int(round(d))) if float(d).is_integer() else f"{d:.3f}"

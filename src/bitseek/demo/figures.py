"""Pictures for the demo reports: query items beside their top retrieved items."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np



def _tile(frames: np.ndarray, n: int) -> np.ndarray:
    """A horizontal strip of ``n`` evenly spaced frames of a (T, H, W) clip."""
    idx = np.linspace(0, len(frames) - 1, n).round().astype(int)
    return np.concatenate([frames[i] for i in idx], axis=1)


def plot_retrievals(path: Path, queries: Sequence[np.ndarray], results: Sequence[Sequence[np.ndarray]],
                    relevant: Sequence[Sequence[bool]], query_titles: Sequence[str],
                    result_titles: Sequence[Sequence[str]], frames_per_clip: int = 4) -> Path:
    """Grid: one row per query; the query clip (or image) first, then its top results.

    A result is framed green when it shares a label with the query and red otherwise. Clips are
    (T, H, W) uint8 arrays shown as strips of ``frames_per_clip`` frames; images are (H, W).
    """
    from bitseek.eval.report import pyplot, save_png

    plt = pyplot()

    def strip(x: np.ndarray) -> np.ndarray:
        return _tile(x, frames_per_clip) if x.ndim == 3 else x

    rows, cols = len(queries), 1 + max(len(r) for r in results)
    w = strip(queries[0]).shape[1] / strip(queries[0]).shape[0]
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3 * w, rows * 1.5), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.imshow(strip(queries[r]), cmap="gray")
                ax.set_title(query_titles[r], fontsize=7)
                for s in ax.spines.values():
                    s.set_edgecolor("blue")
                    s.set_linewidth(2)
            elif c - 1 < len(results[r]):
                ax.imshow(strip(results[r][c - 1]), cmap="gray")
                ax.set_title(result_titles[r][c - 1], fontsize=7)
                color = "green" if relevant[r][c - 1] else "red"
                for s in ax.spines.values():
                    s.set_edgecolor(color)
                    s.set_linewidth(2)
            else:
                ax.axis("off")
    fig.suptitle("queries (blue) and their top results (green: shares a label, red: does not)", fontsize=9)
    fig.tight_layout()
    try:
        save_png(fig, path, dpi=110)
    finally:
        plt.close(fig)
    return path

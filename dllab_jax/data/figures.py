"""Figures of data sets: a grid of example images titled with their classes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def save_example_grid(
    path: str,
    images: np.ndarray,
    labels: np.ndarray | Sequence[int],
    class_names: Sequence[str],
    num_cols: int = 8,
    title: str | None = None,
) -> str:
    """Writes a PNG grid of images, each titled with its class name.

    Uses matplotlib's Agg canvas directly (no pyplot), so it works headless and never
    changes the global backend.

    Args:
      path: the PNG file to write.
      images: [n, H, W, 3] uint8 (or [n, H, W] grey).
      labels: [n] integer class ids.
      class_names: names indexed by label.
      num_cols: images per row.
      title: optional figure title.

    Returns:
      `path`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(images)
    num_cols = max(1, min(num_cols, n))
    num_rows = max(1, -(-n // num_cols))
    fig = Figure(figsize=(1.4 * num_cols, 1.55 * num_rows + (0.4 if title else 0.0)))
    FigureCanvasAgg(fig)
    for i in range(num_rows * num_cols):
        ax = fig.add_subplot(num_rows, num_cols, i + 1)
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], cmap="gray" if images[i].ndim == 2 else None)
            ax.set_title(class_names[int(labels[i])], fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path

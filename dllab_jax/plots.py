"""Report figures written into a run's workdir (matplotlib, Agg backend, no display)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def curves(history: Sequence[dict], metrics: Sequence[str], steps_per_epoch: int, path) -> None:
    """Train and eval curves per epoch, one panel per metric.

    Args:
      history: records {"step": int, "<split>/<metric>": float, ...} (see `logs.History`).
      metrics: metric names without split prefix, e.g. ("loss", "accuracy").
      steps_per_epoch: converts steps to epochs on the x axis.
      path: the PNG to write.
    """
    splits = sorted({k.split("/")[0] for r in history for k in r if "/" in k})
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for split in splits:
            key = f"{split}/{metric}"
            points = [(r["step"] / steps_per_epoch, r[key]) for r in history if key in r]
            if points:
                x, y = zip(*points, strict=True)
                ax.plot(x, y, marker="o" if split != "train" else None, ms=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def confusion_matrix(confusion: np.ndarray, class_names: Sequence[str], path, title="") -> None:
    """Row-normalised confusion matrix (rows: label), per-class accuracy on the diagonal."""
    confusion = np.asarray(confusion, np.float64)
    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        ax.set_xticks(range(n), class_names, rotation=90)
        ax.set_yticks(range(n), class_names)
        for i in range(n):
            ax.text(i, i, f"{rows[i, i]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xlabel("prediction")
    ax.set_ylabel("label")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def retrieval_examples(
    queries: Sequence[str],
    images: Sequence[Sequence[np.ndarray]],
    correct: Sequence[Sequence[bool]],
    path,
) -> None:
    """One row per text query: the query, then its top-ranked images left to right.

    Args:
      queries: the caption of each row.
      images: per row, the ranked images ([H, W, 3] uint8).
      correct: per row and image, whether it is the caption's own image (framed green).
    """
    rows, cols = len(queries), max(len(r) for r in images)
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 2.1 * rows), squeeze=False)
    for r, (query, row_images, row_correct) in enumerate(
        zip(queries, images, correct, strict=True)
    ):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(row_images):
                ax.imshow(row_images[c], interpolation="nearest")
                colour = "tab:green" if row_correct[c] else "lightgrey"
                for spine in ax.spines.values():
                    spine.set_edgecolor(colour)
                    spine.set_linewidth(4 if row_correct[c] else 1)
            ax.set_title(f"#{c + 1}", fontsize=8)
        axes[r][0].set_ylabel(
            "\n".join(_wrap(query, 28)),
            fontsize=8,
            rotation=0,
            ha="right",
            va="center",
            labelpad=10,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*lines, line] if line else lines


def captioned_images(
    images: Sequence[np.ndarray], generated: Sequence[str], references: Sequence[str], path
) -> None:
    """A grid of images, each with its generated (G) and a reference (R) caption."""
    cols = 4
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, gen, ref in zip(axes.flat, images, generated, references, strict=False):
        ax.imshow(image, interpolation="nearest")
        text = "G: " + "\n".join(_wrap(gen, 34)) + "\nR: " + "\n".join(_wrap(ref, 34))
        ax.set_title(text, fontsize=7, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)

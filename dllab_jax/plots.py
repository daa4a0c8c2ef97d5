"""Report figures written into a run's workdir (matplotlib, Agg backend, no display)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.patches
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


def iou_bars(iou: dict[str, float], path, title: str = "") -> None:
    """Horizontal bar chart of per-class IoU with the mean IoU as a dashed line."""
    names = list(iou)
    values = np.asarray([iou[n] for n in names], np.float64)
    fig, ax = plt.subplots(figsize=(6.0, 0.32 * len(names) + 1.4))
    ax.barh(range(len(names)), values, color="tab:blue")
    ax.axvline(values.mean(), color="k", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()  # first class on top
    for i, value in enumerate(values):
        ax.text(min(value, 0.9) + 0.01, i, f"{value:.2f}", va="center", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("IoU")
    ax.set_title(f"{title} (mIoU {values.mean():.3f}, dashed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def label_palette(num_classes: int) -> np.ndarray:
    """[256, 3] uint8 colours: distinct ones for the classes, white for 255 (ignore)."""
    cmap = plt.get_cmap("tab20" if num_classes > 10 else "tab10")
    palette = np.zeros((256, 3), np.uint8)
    for c in range(min(num_classes, 255)):
        palette[c] = np.asarray(cmap(c % cmap.N)[:3]) * 255
    palette[255] = 255
    return palette


def segmentation_examples(
    images: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray,
    class_names: Sequence[str],
    path,
) -> None:
    """One row per example: image, label, prediction (classes coloured, ignore white).

    Args:
      images: [n, H, W, 3] uint8; labels, predictions: [n, H, W] int.
    """
    palette = label_palette(len(class_names))
    colour = lambda m: palette[np.clip(np.asarray(m), 0, 255).astype(np.int64)]
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.2 * n + 0.8), squeeze=False)
    for i in range(n):
        for j, (title, shown) in enumerate(
            (
                ("image", images[i]),
                ("label", colour(labels[i])),
                ("prediction", colour(predictions[i])),
            )
        ):
            axes[i][j].imshow(shown, interpolation="nearest")
            axes[i][j].axis("off")
            if i == 0:
                axes[i][j].set_title(title, fontsize=9)
    handles = [
        matplotlib.patches.Patch(color=palette[c] / 255, label=name)
        for c, name in enumerate(class_names)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=7)
    fig.tight_layout(rect=(0, 0.04 + 0.012 * (len(handles) // 5), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _edge_map(image: np.ndarray) -> np.ndarray:
    """[H, W, C] -> [H, W] gradient magnitude (neighbour differences), channels averaged."""
    dx = np.diff(image, axis=1, append=image[:, -1:])
    dy = np.diff(image, axis=0, append=image[-1:])
    return np.sqrt(dx**2 + dy**2).mean(axis=-1)


def colorization_examples(
    grey: np.ndarray, predictions: np.ndarray, targets: np.ndarray, path, title: str = ""
) -> None:
    """One row per example: grey input, predicted colours, true colours, and the edges
    (gradient magnitude) of the prediction and of the target on one scale, where lost detail
    shows whatever the colours ([n, H, W, C] in [0, 1]; grey has one channel)."""
    n = len(grey)
    fig, axes = plt.subplots(n, 5, figsize=(10.5, 2.2 * n + 0.4), squeeze=False)
    for i in range(n):
        prediction, target = np.clip(predictions[i], 0, 1), np.clip(targets[i], 0, 1)
        edges = _edge_map(prediction), _edge_map(target)
        edge_max = max(float(np.percentile(edges[1], 99)), 1e-3)
        shown = (
            ("grey input", np.clip(grey[i][..., 0], 0, 1), 1.0),
            ("prediction", prediction, 1.0),
            ("target", target, 1.0),
            ("edges: prediction", edges[0], edge_max),
            ("edges: target", edges[1], edge_max),
        )
        for j, (name, image, vmax) in enumerate(shown):
            axes[i][j].imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=vmax)
            axes[i][j].axis("off")
            if i == 0:
                axes[i][j].set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _code_label(code: str, seen: Sequence[str]) -> str:
    return f"{code} ({'seen' if code in seen else 'unseen'})"


def concept_samples(
    samples: Mapping[str, np.ndarray], seen: Sequence[str], path, num_samples: int = 8
) -> None:
    """One row per code of its first samples.

    Args:
      samples: code -> [n, H, W, 3] float images in [0, 1].
      seen: codes labelled 'seen' (the others 'unseen').
      path: the PNG to write.
      num_samples: samples per code (columns), at most.
    """
    codes = list(samples)
    cols = min(num_samples, min(len(v) for v in samples.values()))
    fig, axes = plt.subplots(
        len(codes), cols, figsize=(1.1 * cols + 1.6, 1.1 * len(codes)), squeeze=False
    )
    for row, code in enumerate(codes):
        for col in range(cols):
            ax = axes[row, col]
            ax.imshow(np.clip(samples[code][col], 0.0, 1.0))
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(_code_label(code, seen), rotation=0, ha="right", va="center")
    fig.suptitle("generated samples (shape, colour, size bits)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def concept_mean_images(samples: Mapping[str, np.ndarray], seen: Sequence[str], path) -> None:
    """A row of the mean generated image of each code; titles say seen / unseen."""
    codes = list(samples)
    fig, axes = plt.subplots(1, len(codes), figsize=(1.5 * len(codes), 2.0), squeeze=False)
    for ax, code in zip(axes[0], codes, strict=True):
        ax.imshow(np.clip(samples[code].mean(axis=0), 0.0, 1.0))
        ax.set_title(_code_label(code, seen).replace(" ", "\n"), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("mean generated image per code")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

"""Segmentation: IoU per class, mIoU, pixel accuracy and loss from a summed confusion matrix.

The confusion matrix is summed over the whole split (padding masked), so the IoU is the
handouts': per class TP / (TP + FP + FN) over all pixels of the split, not a mean over batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dllab_jax.evaluators import Evaluation
from dllab_jax.metrics import confusion_matrix, pixel_cross_entropy

EMPTY_CLASS_RULES = ("zero", "skip")


def segmentation_sums(
    logits: jnp.ndarray, labels: jnp.ndarray, mask: jnp.ndarray
) -> dict[str, jnp.ndarray]:
    """Sums for pixel cross-entropy, pixel accuracy and the IoU confusion matrix (under jit).

    Args:
      logits: [B, H, W, num_classes]; labels: [B, H, W] int (255 = ignore);
      mask: [B] float, 1 = real example (padding adds nothing).
    """
    num_classes = logits.shape[-1]
    losses, valid = pixel_cross_entropy(logits, labels)
    weights = valid * mask[:, None, None]
    predictions = jnp.argmax(logits, axis=-1)
    return {
        "pixels": weights.sum(),
        "loss_sum": (losses * weights).sum(),
        "confusion": confusion_matrix(labels, predictions, num_classes, weights, jnp.int32),
    }


def iou_per_class(confusion: np.ndarray, empty_class: str = "zero") -> np.ndarray:
    """IoU = TP / (TP + FP + FN) of each class from a confusion matrix (rows: label).

    Args:
      confusion: [C, C] counts.
      empty_class: what a class with TP + FP + FN = 0 (absent from both labels and
        predictions) gets. "zero" (the TU Wien handout's `SegMetrics.mIoU`: "if the
        denominator ... is 0, use 0") pulls the mean down; "skip" gives NaN, so a nan-mean
        leaves the class out (the Freiburg handout's and mmsegmentation's convention).
    """
    if empty_class not in EMPTY_CLASS_RULES:
        raise ValueError(f"empty_class must be one of {EMPTY_CLASS_RULES}, got {empty_class!r}")
    confusion = np.asarray(confusion, np.float64)
    tp = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    empty = 0.0 if empty_class == "zero" else np.nan
    return np.where(union > 0, tp / np.maximum(union, 1), empty)


def finalize(sums: Mapping, class_names: Sequence[str], empty_class: str = "zero") -> Evaluation:
    """Metrics of a split from its summed `segmentation_sums`.

    Returns:
      Evaluation with metrics {miou (the mean of `iou_per_class` over the classes, see
      `empty_class` there), iou/<class> (NaN for a skipped empty class), pixel_accuracy,
      loss (mean cross-entropy over labelled pixels)} and artifacts {iou: {class: IoU}}.
    """
    sums = jax.device_get(sums)
    confusion = np.asarray(sums["confusion"], np.int64)
    if len(class_names) != len(confusion):
        raise ValueError(f"{len(class_names)} class names for {len(confusion)} classes")
    iou = iou_per_class(confusion, empty_class)
    pixels = max(float(sums["pixels"]), 1.0)
    metrics = {
        "miou": float(np.nanmean(iou)) if not np.isnan(iou).all() else 0.0,
        "pixel_accuracy": float(np.trace(confusion) / max(confusion.sum(), 1)),
        "loss": float(sums["loss_sum"]) / pixels,
    }
    per_class = {name: float(v) for name, v in zip(class_names, iou, strict=True)}
    metrics.update({f"iou/{name}": v for name, v in per_class.items()})
    return Evaluation(metrics, {"iou": per_class})

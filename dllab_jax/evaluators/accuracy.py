"""Classification: accuracy, per-class accuracy and cross-entropy from summed counts."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dllab_jax.evaluators import Evaluation
from dllab_jax.metrics import confusion_matrix


def classification_sums(
    logits: jnp.ndarray, labels: jnp.ndarray, mask: jnp.ndarray, num_classes: int
) -> dict[str, jnp.ndarray]:
    """Sums for accuracy, per-class accuracy and cross-entropy (works under jit).

    Args:
      logits: [B, num_classes]; labels: [B] int; mask: [B] float, 1 = real example.
    """
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    predictions = jnp.argmax(logits, axis=-1)
    return {
        "count": mask.sum(),
        "loss_sum": (losses * mask).sum(),
        "correct": ((predictions == labels) * mask).sum(),
        "confusion": confusion_matrix(labels, predictions, num_classes, mask),
    }


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Recall of each class, NaN for a class with no examples."""
    confusion = np.asarray(confusion, np.float64)
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(confusion) / support


def finalize(sums: Mapping) -> Evaluation:
    """Metrics of a split from its summed `classification_sums`.

    Returns:
      Evaluation with metrics {accuracy, per_class_accuracy (unweighted mean over the classes
      present), loss} and artifacts {confusion: [C, C] counts, rows = labels}.
    """
    sums = jax.device_get(sums)
    count = float(sums["count"])
    metrics = {
        "accuracy": float(sums["correct"]) / count,
        "per_class_accuracy": float(np.nanmean(per_class_accuracy(sums["confusion"]))),
        "loss": float(sums["loss_sum"]) / count,
    }
    return Evaluation(metrics, {"confusion": np.asarray(sums["confusion"])})

"""Metric primitives shared by losses and evaluators: sums, confusion counts, PSNR.

Evaluation steps return sums and counts, finalised once per split by an evaluator
(`dllab_jax.evaluators`). Sums (not means) make padded batches exact: masked-out examples add
zero, and a split's metrics are the same whatever its size or the batch size. Functions here
are pure and work under jit.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax


def add_sums(total: Mapping | None, update: Mapping) -> dict:
    """Adds two trees of sums; `total=None` starts a new accumulation."""
    if total is None:
        return dict(update)
    return jax.tree.map(jnp.add, dict(total), dict(update))


def confusion_matrix(
    labels: jnp.ndarray,
    predictions: jnp.ndarray,
    num_classes: int,
    weights: jnp.ndarray,
    dtype=jnp.float32,
) -> jnp.ndarray:
    """Counts of (label, prediction) pairs, weighted (0 drops an example or pixel).

    Args:
      labels, predictions: integer arrays of the same shape; labels outside
        [0, num_classes) (e.g. 255 = ignore) are dropped.
      weights: same shape, 1 to count, 0 to drop.
      dtype: of the counts. Pixel counts use int32: float32 stops counting exactly at 2^24,
        which one class of a segmentation split passes easily.

    Returns:
      [num_classes, num_classes] counts, rows = labels, columns = predictions.
    """
    labels = labels.reshape(-1)
    predictions = predictions.reshape(-1)
    weights = weights.reshape(-1).astype(dtype)
    valid = (labels >= 0) & (labels < num_classes)
    weights = jnp.where(valid, weights, jnp.zeros_like(weights))
    flat_index = jnp.where(valid, labels, 0) * num_classes + predictions
    counts = jnp.zeros(num_classes * num_classes, dtype).at[flat_index].add(weights)
    return counts.reshape(num_classes, num_classes)


def pixel_cross_entropy(
    logits: jnp.ndarray, labels: jnp.ndarray, ignore_label: int = 255
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Per-pixel cross-entropy and the mask of labelled pixels.

    Args:
      logits: [..., num_classes]; labels: [...] int, `ignore_label` (or any value outside
        [0, num_classes)) marks a pixel without a label.

    Returns:
      (losses, valid): float32 arrays of the labels' shape; losses are 0 where not valid.
    """
    num_classes = logits.shape[-1]
    valid = (labels >= 0) & (labels < num_classes) & (labels != ignore_label)
    safe = jnp.where(valid, labels, 0)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe)
    valid = valid.astype(jnp.float32)
    return losses * valid, valid


def psnr(predictions: jnp.ndarray, targets: jnp.ndarray, max_value: float = 1.0) -> jnp.ndarray:
    """Peak signal-to-noise ratio in dB of each image: [B, H, W, C] -> [B].

    Predictions are clipped to [0, max_value] first (what an image of them would show).
    """
    predictions = jnp.clip(predictions.astype(jnp.float32), 0.0, max_value)
    mse = jnp.mean(jnp.square(predictions - targets.astype(jnp.float32)), axis=(1, 2, 3))
    return 10.0 * jnp.log10(max_value**2 / jnp.maximum(mse, 1e-10))


def mean_of_steps(step_metrics: list[Mapping]) -> dict[str, float]:
    """Averages per-step scalar training metrics over a logging window."""
    step_metrics = jax.device_get(step_metrics)
    keys = step_metrics[0].keys()
    return {k: float(np.mean([float(m[k]) for m in step_metrics])) for k in keys}

"""Image regression (colourisation): PSNR, L1, MSE and the training loss, averaged over images."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from dllab_jax.evaluators import Evaluation
from dllab_jax.metrics import psnr

LOSSES = ("l1", "l2")


def image_error_sums(
    outputs: jnp.ndarray, targets: jnp.ndarray, mask: jnp.ndarray, loss: str
) -> dict[str, jnp.ndarray]:
    """Per-image errors summed over the real images of a batch (under jit).

    Args:
      outputs, targets: [B, H, W, C] float in [0, 1] (outputs are clipped for the PSNR only).
      mask: [B] float, 1 = real image.
      loss: 'l1' or 'l2', the training loss that `loss_sum` measures.
    """
    diff = outputs - targets
    per_image = {
        "l1": jnp.abs(diff).mean(axis=(1, 2, 3)),
        "l2": jnp.square(diff).mean(axis=(1, 2, 3)),
    }
    return {
        "count": mask.sum(),
        "loss_sum": (per_image[loss] * mask).sum(),
        "l1_sum": (per_image["l1"] * mask).sum(),
        "mse_sum": (per_image["l2"] * mask).sum(),
        "psnr_sum": (psnr(outputs, targets) * mask).sum(),
    }


def finalize(sums: Mapping) -> Evaluation:
    """{loss, l1, mse, psnr (dB)}, means over the split's images; the PSNR is also an
    artifact (a report's title)."""
    sums = jax.device_get(sums)
    count = max(float(sums["count"]), 1.0)
    metrics = {
        "loss": float(sums["loss_sum"]) / count,
        "l1": float(sums["l1_sum"]) / count,
        "mse": float(sums["mse_sum"]) / count,
        "psnr": float(sums["psnr_sum"]) / count,
    }
    return Evaluation(metrics, {"psnr": metrics["psnr"]})

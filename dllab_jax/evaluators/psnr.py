"""Image regression (colourisation): PSNR, L1, MSE, the gradient error and the training loss,
averaged over images (the PSNR and the gradient error are also artifacts: a figure's title).

The gradient error (`gradient_l1`) is the mean absolute difference between the predicted and
the true image gradients (differences of neighbouring pixels, across and down, per channel).
It measures detail alone: a prediction off by a constant colour (a hue the grey input cannot
tell) has no gradient error, while a blurred one misses every edge and thin stroke. PSNR
mixes both, which is why skip connections move it little on random-coloured shapes.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from dllab_jax.evaluators import Evaluation
from dllab_jax.metrics import psnr

LOSSES = ("l1", "l2")


def gradient_l1(outputs: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
    """[B, H, W, C] images -> [B] mean |grad outputs - grad targets| over both directions."""

    def error(axis):
        return jnp.abs(jnp.diff(outputs, axis=axis) - jnp.diff(targets, axis=axis)).mean(
            axis=(1, 2, 3)
        )

    return (error(1) + error(2)) / 2.0


def image_error_sums(
    outputs: jnp.ndarray, targets: jnp.ndarray, mask: jnp.ndarray, loss: str
) -> dict[str, jnp.ndarray]:
    """Per-image errors summed over the real images of a batch (under jit).

    Args:
      outputs, targets: [B, H, W, C] float in [0, 1] (outputs are clipped for the PSNR and
        the gradient error, which compare displayed images).
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
        "gradient_l1_sum": (gradient_l1(jnp.clip(outputs, 0.0, 1.0), targets) * mask).sum(),
    }


def finalize(sums: Mapping) -> Evaluation:
    """{loss, l1, mse, psnr (dB), gradient_l1}, means over the split's images."""
    sums = jax.device_get(sums)
    count = max(float(sums["count"]), 1.0)
    metrics = {
        "loss": float(sums["loss_sum"]) / count,
        "l1": float(sums["l1_sum"]) / count,
        "mse": float(sums["mse_sum"]) / count,
        "psnr": float(sums["psnr_sum"]) / count,
        "gradient_l1": float(sums["gradient_l1_sum"]) / count,
    }
    return Evaluation(metrics, {"psnr": metrics["psnr"], "gradient_l1": metrics["gradient_l1"]})

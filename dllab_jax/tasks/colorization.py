"""E2 colourisation (Ljubljana HW2 task 3): a U-Net maps the grey image to its colours.

Input: the luma of the RGB image (ITU-R BT.601, as PIL's "L" mode), scaled to [-1, 1], one
channel. Output: RGB in [0, 1] (3 linear outputs; `config.model.name = 'unet'` with
`num_classes = 3` output channels). Loss: L1 or L2 (`config.loss`) against the true colours;
metric: PSNR in dB (per image, predictions clipped to [0, 1], averaged over images), with the
mean absolute and squared errors. Any image source works; its labels, if any, are unused.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dllab_jax import metrics as metrics_lib
from dllab_jax import registry
from dllab_jax.data import augment as augment_lib
from dllab_jax.errors import UserError
from dllab_jax.tasks.base import Task

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
LOSSES = ("l1", "l2")
NUM_FIGURE_EXAMPLES = 6


def rgb_targets(images: jnp.ndarray) -> jnp.ndarray:
    """uint8 [B, H, W, 3] -> float32 RGB in [0, 1]."""
    return images.astype(jnp.float32) / 255.0


def grey_inputs(images: jnp.ndarray) -> jnp.ndarray:
    """uint8 [B, H, W, 3] -> float32 [B, H, W, 1] luma in [-1, 1]."""
    luma = rgb_targets(images) @ jnp.asarray(LUMA_WEIGHTS, jnp.float32)
    return (luma * 2.0 - 1.0)[..., None]


@registry.tasks.register("colorization")
class ColorizationTask(Task):
    curve_metrics = ("loss", "psnr")

    def __init__(self, config):
        super().__init__(config)
        if config.loss not in LOSSES:
            raise UserError(f"config.loss must be one of {LOSSES}, got {config.loss!r}")

    def augment(self):
        return augment_lib.make_augment(self.config.get("augment"))

    def model_kwargs(self):
        return {"num_classes": 3}  # the U-Net's output channels: R, G, B

    def dummy_batch(self, batch_size):
        height, width, _ = self.source("train").info.image_shape
        return {"image": np.zeros((batch_size, height, width, 3), np.uint8)}

    def init_inputs(self, batch):
        return (grey_inputs(batch["image"]),)

    def _errors(self, outputs, targets):
        diff = outputs - targets
        return jnp.abs(diff) if self.config.loss == "l1" else jnp.square(diff)

    def loss(self, model, params, model_state, batch, rng):
        outputs, new_model_state = model.apply(
            {"params": params, **model_state},
            grey_inputs(batch["image"]),
            train=True,
            rngs={"dropout": rng},
            mutable=list(model_state),
        )
        targets = rgb_targets(batch["image"])
        loss = self._errors(outputs, targets).mean()
        return loss, ({"psnr": metrics_lib.psnr(outputs, targets).mean()}, new_model_state)

    def eval_sums(self, model, variables, batch):
        outputs = model.apply(variables, grey_inputs(batch["image"]), train=False)
        targets = rgb_targets(batch["image"])
        mask = batch["batch_mask"]
        per_image = lambda x: x.mean(axis=(1, 2, 3))
        return {
            "count": mask.sum(),
            "loss_sum": (per_image(self._errors(outputs, targets)) * mask).sum(),
            "l1_sum": (per_image(jnp.abs(outputs - targets)) * mask).sum(),
            "mse_sum": (per_image(jnp.square(outputs - targets)) * mask).sum(),
            "psnr_sum": (metrics_lib.psnr(outputs, targets) * mask).sum(),
        }

    def finalize(self, sums):
        sums = jax.device_get(sums)
        count = max(float(sums["count"]), 1.0)
        return {
            "loss": float(sums["loss_sum"]) / count,
            "l1": float(sums["l1_sum"]) / count,
            "mse": float(sums["mse_sum"]) / count,
            "psnr": float(sums["psnr_sum"]) / count,
        }

    @functools.cached_property
    def _jitted_colourise(self):
        def colourise(model, variables, images):
            return model.apply(variables, grey_inputs(images))

        return jax.jit(colourise, static_argnums=0)

    def report(self, model, variables, workdir, place):
        """Grey input, prediction and target of the first validation examples."""
        from dllab_jax import plots

        split = "val" if "val" in self.last_sums else next(iter(self.last_sums), "val")
        batch = self.first_examples(split, NUM_FIGURE_EXAMPLES)
        outputs = self._jitted_colourise(model, variables, place(batch)["image"])
        n = int(batch["batch_mask"].sum())
        images = batch["image"][:n]
        psnr = self.finalize(self.last_sums[split])["psnr"] if split in self.last_sums else None
        skips = self.config.model.get("skip_connections", True)
        plots.colorization_examples(
            np.asarray(jax.device_get(grey_inputs(images)) + 1.0) / 2.0,
            np.asarray(jax.device_get(outputs))[:n],
            np.asarray(images, np.float32) / 255.0,
            Path(workdir) / f"colorization_{split}.png",
            title=f"U-Net {'with' if skips else 'without'} skips"
            + (f", {split} PSNR {psnr:.2f} dB" if psnr is not None else ""),
        )

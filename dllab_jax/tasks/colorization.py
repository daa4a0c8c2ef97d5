"""E2 colourisation (Ljubljana HW2 task 3): a U-Net maps the grey image to its colours.

Input: the luma of the RGB image (ITU-R BT.601, as PIL's "L" mode), scaled to [-1, 1], one
channel. Output: RGB in [0, 1] (3 linear outputs; `config.model.name = 'unet'` with
`num_classes = 3` output channels). Loss: L1 or L2 (`config.loss`) against the true colours;
metric: PSNR in dB (per image, predictions clipped to [0, 1], averaged over images), with the
mean absolute and squared errors and the gradient error, which measures detail apart from
colour (dllab_jax/evaluators/psnr.py). Any image source works; its labels, if any, are unused.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dllab_jax import registry
from dllab_jax.data import augment as augment_lib
from dllab_jax.errors import UserError
from dllab_jax.evaluators import psnr as psnr_lib
from dllab_jax.metrics import psnr
from dllab_jax.tasks.base import Task

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
LOSSES = psnr_lib.LOSSES


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
    num_report_examples = 6

    def __init__(self, config):
        super().__init__(config)
        if config.loss not in LOSSES:
            raise UserError(f"config.loss must be one of {LOSSES}, got {config.loss!r}")

    def augment(self):
        return augment_lib.make_augment(self.config.get("augment"))

    def model_kwargs(self):
        return {"num_classes": 3}  # the U-Net's output channels: R, G, B

    def model_images(self, batch):
        return grey_inputs(batch["image"])

    def loss(self, model, params, model_state, batch, rng):
        outputs, new_model_state = model.apply(
            {"params": params, **model_state},
            self.model_images(batch),
            train=True,
            rngs={"dropout": rng},
            mutable=list(model_state),
        )
        targets = rgb_targets(batch["image"])
        diff = outputs - targets
        loss = (jnp.abs(diff) if self.config.loss == "l1" else jnp.square(diff)).mean()
        return loss, ({"psnr": psnr(outputs, targets).mean()}, new_model_state)

    def eval_step(self, model, variables, batch):
        outputs = model.apply(variables, self.model_images(batch), train=False)
        sums = psnr_lib.image_error_sums(
            outputs, rgb_targets(batch["image"]), batch["batch_mask"], self.config.loss
        )
        return sums, {"colours": outputs}

    def finalize(self, sums):
        return psnr_lib.finalize(sums)

    def report(self, split_artifacts, run_artifacts, workdir):
        """Grey input, prediction and target of the first validation examples."""
        from dllab_jax import plots

        split = "val" if "val" in split_artifacts else next(iter(split_artifacts), None)
        if split is None:
            return
        artifacts = split_artifacts[split]
        images = artifacts["examples"]["image"]
        skips = self.config.model.get("skip_connections", True)
        plots.colorization_examples(
            np.asarray(jax.device_get(grey_inputs(images)) + 1.0) / 2.0,
            artifacts["examples"]["colours"],
            np.asarray(images, np.float32) / 255.0,
            Path(workdir) / f"colorization_{split}.png",
            title=f"U-Net {'with' if skips else 'without'} skips, {split} PSNR "
            f"{artifacts['psnr']:.2f} dB, gradient error {artifacts['gradient_l1']:.4f}",
        )

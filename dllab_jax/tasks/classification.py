"""E1 image classification: cross-entropy, accuracy, per-class accuracy."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import optax

from dllab_jax import metrics as metrics_lib
from dllab_jax import registry
from dllab_jax.data import augment as augment_lib
from dllab_jax.tasks.base import Task


def normalize_images(images: jnp.ndarray, mean, std) -> jnp.ndarray:
    """uint8 [B, H, W, C] -> float32, scaled to [0, 1] then standardised per channel."""
    images = images.astype(jnp.float32) / 255.0
    return (images - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


@registry.tasks.register("classification")
class ClassificationTask(Task):
    curve_metrics = ("loss", "accuracy")

    @property
    def num_classes(self) -> int:
        return self.source("train").info.num_classes

    def augment(self):
        return augment_lib.make_augment(self.config.augment)

    def model_kwargs(self):
        return {"num_classes": self.num_classes}

    def dummy_batch(self, batch_size):
        height, width, channels = self.source("train").info.image_shape
        return {
            "image": np.zeros((batch_size, height, width, channels), np.uint8),
            "label": np.zeros((batch_size,), np.int32),
        }

    def _images(self, batch):
        return normalize_images(batch["image"], self.config.data.mean, self.config.data.std)

    def init_inputs(self, batch):
        return (self._images(batch),)

    def loss(self, model, params, model_state, batch, rng):
        variables = {"params": params, **model_state}
        logits, new_model_state = model.apply(
            variables,
            self._images(batch),
            train=True,
            rngs={"dropout": rng},
            mutable=list(model_state),
        )
        labels = batch["label"]
        loss = optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), labels
        ).mean()
        accuracy = (jnp.argmax(logits, -1) == labels).mean()
        return loss, ({"accuracy": accuracy}, new_model_state)

    def eval_sums(self, model, variables, batch):
        logits = model.apply(variables, self._images(batch), train=False)
        return metrics_lib.classification_sums(
            logits, batch["label"], batch["batch_mask"], self.num_classes
        )

    def finalize(self, sums):
        return metrics_lib.finalize_classification(sums)

    def report(self, model, variables, workdir, place):
        """The validation confusion matrix, from the final evaluation's sums."""
        from dllab_jax import plots

        for split in ("val", "test"):
            if split in self.last_sums:
                plots.confusion_matrix(
                    np.asarray(self.last_sums[split]["confusion"]),
                    self.source(split).info.class_names,
                    Path(workdir) / f"confusion_{split}.png",
                    title=f"{split}: confusion matrix (rows: label)",
                )

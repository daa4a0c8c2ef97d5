"""E2/E3 semantic segmentation: pixel cross-entropy ignoring 255, IoU from a confusion matrix.

Works with any dense model (`fcn32`, `unet`, `segformer`) and any segmentation source
(`scenes`, `oxford_iiit_pet`, `cityscapes`, `carla`): batches hold `image` [B, H, W, 3] uint8
and `label` [B, H, W] int32 with 255 = no label. The confusion matrix is summed over the whole
split (padding masked), so the IoU is the handout's: per class TP / (TP + FP + FN) over all
pixels of the split, not a mean over batches.
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
from dllab_jax.tasks.classification import normalize_images

NUM_FIGURE_EXAMPLES = 6


@registry.tasks.register("segmentation")
class SegmentationTask(Task):
    curve_metrics = ("loss", "miou")

    def __init__(self, config):
        super().__init__(config)
        rule = config.get("empty_class_iou", "zero")
        if rule not in metrics_lib.EMPTY_CLASS_RULES:
            raise UserError(
                f"config.empty_class_iou must be one of {metrics_lib.EMPTY_CLASS_RULES}, "
                f"got {rule!r}"
            )

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.source("train").info.class_names)

    def augment(self):
        return augment_lib.make_augment(self.config.get("augment"))

    def model_kwargs(self):
        return {"num_classes": len(self.class_names)}

    def dummy_batch(self, batch_size):
        height, width, channels = self.source("train").info.image_shape
        return {
            "image": np.zeros((batch_size, height, width, channels), np.uint8),
            "label": np.zeros((batch_size, height, width), np.int32),
        }

    def _images(self, batch):
        return normalize_images(batch["image"], self.config.data.mean, self.config.data.std)

    def init_inputs(self, batch):
        return (self._images(batch),)

    def loss(self, model, params, model_state, batch, rng):
        logits, new_model_state = model.apply(
            {"params": params, **model_state},
            self._images(batch),
            train=True,
            rngs={"dropout": rng},
            mutable=list(model_state),
        )
        losses, valid = metrics_lib.pixel_cross_entropy(logits, batch["label"])
        # torch's CrossEntropyLoss(ignore_index=255): the mean over labelled pixels.
        num_valid = jnp.maximum(valid.sum(), 1.0)
        correct = (jnp.argmax(logits, -1) == batch["label"]) * valid
        return losses.sum() / num_valid, (
            {"pixel_accuracy": correct.sum() / num_valid},
            new_model_state,
        )

    def eval_sums(self, model, variables, batch):
        logits = model.apply(variables, self._images(batch), train=False)
        return metrics_lib.segmentation_sums(logits, batch["label"], batch["batch_mask"])

    def finalize(self, sums):
        return metrics_lib.finalize_segmentation(
            sums, self.class_names, self.config.get("empty_class_iou", "zero")
        )

    @functools.cached_property
    def _jitted_predict(self):
        def predict(model, variables, images):
            return jnp.argmax(model.apply(variables, self._images({"image": images})), -1)

        return jax.jit(predict, static_argnums=0)

    def report(self, model, variables, workdir, place):
        """Per-class IoU bars of every evaluated split and predicted masks of the first
        validation examples."""
        from dllab_jax import plots

        for split, sums in self.last_sums.items():
            metrics = self.finalize(sums)
            iou = {name: metrics[f"iou/{name}"] for name in self.class_names}
            plots.iou_bars(iou, Path(workdir) / f"iou_{split}.png", title=f"{split}: IoU")
        split = "val" if "val" in self.last_sums else next(iter(self.last_sums), "val")
        batch = self.first_examples(split, NUM_FIGURE_EXAMPLES)
        predictions = self._jitted_predict(model, variables, place(batch)["image"])
        n = int(batch["batch_mask"].sum())
        plots.segmentation_examples(
            batch["image"][:n],
            batch["label"][:n],
            np.asarray(jax.device_get(predictions))[:n],
            self.class_names,
            Path(workdir) / f"predictions_{split}.png",
        )

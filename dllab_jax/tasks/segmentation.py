"""E2/E3 semantic segmentation: pixel cross-entropy ignoring 255, IoU from a confusion matrix.

Works with any dense model (`fcn32`, `unet`, `segformer`) and any segmentation source
(`scenes`, `oxford_iiit_pet`, `cityscapes`, `carla`): batches hold `image` [B, H, W, 3] uint8
and `label` [B, H, W] int32 with 255 = no label. The confusion matrix is summed over the whole
split (padding masked), so the IoU is the handout's: per class TP / (TP + FP + FN) over all
pixels of the split, not a mean over batches.
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from dllab_jax import registry
from dllab_jax.data import augment as augment_lib
from dllab_jax.errors import UserError
from dllab_jax.evaluators import iou
from dllab_jax.metrics import pixel_cross_entropy
from dllab_jax.tasks.base import Task


@registry.tasks.register("segmentation")
class SegmentationTask(Task):
    curve_metrics = ("loss", "miou")
    num_report_examples = 6

    def __init__(self, config):
        super().__init__(config)
        rule = config.get("empty_class_iou", "zero")
        if rule not in iou.EMPTY_CLASS_RULES:
            raise UserError(
                f"config.empty_class_iou must be one of {iou.EMPTY_CLASS_RULES}, got {rule!r}"
            )

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.source("train").info.class_names)

    def augment(self):
        return augment_lib.make_augment(self.config.get("augment"))

    def model_kwargs(self):
        return {"num_classes": len(self.class_names)}

    def dummy_fields(self, batch_size, image_size):
        return {"label": np.zeros((batch_size, *image_size), np.int32)}

    def loss(self, model, params, model_state, batch, rng):
        logits, new_model_state = model.apply(
            {"params": params, **model_state},
            self.model_images(batch),
            train=True,
            rngs={"dropout": rng},
            mutable=list(model_state),
        )
        losses, valid = pixel_cross_entropy(logits, batch["label"])
        # torch's CrossEntropyLoss(ignore_index=255): the mean over labelled pixels.
        num_valid = jnp.maximum(valid.sum(), 1.0)
        correct = (jnp.argmax(logits, -1) == batch["label"]) * valid
        return losses.sum() / num_valid, (
            {"pixel_accuracy": correct.sum() / num_valid},
            new_model_state,
        )

    def eval_step(self, model, variables, batch):
        logits = model.apply(variables, self.model_images(batch), train=False)
        sums = iou.segmentation_sums(logits, batch["label"], batch["batch_mask"])
        return sums, {"prediction": jnp.argmax(logits, -1)}

    def finalize(self, sums):
        return iou.finalize(sums, self.class_names, self.config.get("empty_class_iou", "zero"))

    def report(self, split_artifacts, run_artifacts, workdir):
        """Per-class IoU bars of every evaluated split and predicted masks of the first
        validation examples."""
        from dllab_jax import plots

        for split, artifacts in split_artifacts.items():
            plots.iou_bars(
                artifacts["iou"], Path(workdir) / f"iou_{split}.png", title=f"{split}: IoU"
            )
        split = "val" if "val" in split_artifacts else next(iter(split_artifacts), None)
        if split is None:
            return
        examples = split_artifacts[split]["examples"]
        plots.segmentation_examples(
            examples["image"],
            examples["label"],
            examples["prediction"],
            self.class_names,
            Path(workdir) / f"predictions_{split}.png",
        )

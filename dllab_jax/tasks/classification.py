"""E1 image classification: cross-entropy, accuracy, per-class accuracy."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import optax

from dllab_jax import registry
from dllab_jax.data import augment as augment_lib
from dllab_jax.evaluators import accuracy
from dllab_jax.tasks.base import Task, normalize_images

__all__ = ["ClassificationTask", "normalize_images"]


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

    def dummy_fields(self, batch_size, image_size):
        return {"label": np.zeros((batch_size,), np.int32)}

    def loss(self, model, params, model_state, batch, rng):
        variables = {"params": params, **model_state}
        logits, new_model_state = model.apply(
            variables,
            self.model_images(batch),
            train=True,
            rngs={"dropout": rng},
            mutable=list(model_state),
        )
        labels = batch["label"]
        loss = optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), labels
        ).mean()
        accuracy_ = (jnp.argmax(logits, -1) == labels).mean()
        return loss, ({"accuracy": accuracy_}, new_model_state)

    def eval_step(self, model, variables, batch):
        logits = model.apply(variables, self.model_images(batch), train=False)
        sums = accuracy.classification_sums(
            logits, batch["label"], batch["batch_mask"], self.num_classes
        )
        return sums, {}

    def finalize(self, sums):
        return accuracy.finalize(sums)

    def report(self, split_artifacts, run_artifacts, workdir):
        """The confusion matrix of the validation and test splits' final evaluation."""
        from dllab_jax import plots

        for split in ("val", "test"):
            if split in split_artifacts:
                plots.confusion_matrix(
                    split_artifacts[split]["confusion"],
                    self.source(split).info.class_names,
                    Path(workdir) / f"confusion_{split}.png",
                    title=f"{split}: confusion matrix (rows: label)",
                )

"""The Task contract: a split's sums over padded batches, the report examples kept from the
first batch, and the dummy batch built from the training source's shape."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dllab_jax.data import ArraySource, SourceInfo, pipeline
from dllab_jax.evaluators import Evaluation
from dllab_jax.tasks.base import Task


class MeanTask(Task):
    """The mean pixel of each image, averaged over the split."""

    num_report_examples = 3

    def source(self, split):
        images = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3))
        info = SourceInfo(num_classes=0, class_names=(), image_shape=(2, 2, 3))
        return ArraySource({"image": images.astype(np.uint8)}, info)

    def dummy_fields(self, batch_size, image_size):
        return {"label": np.zeros((batch_size, *image_size), np.int32)}

    def eval_step(self, model, variables, batch):
        means = batch["image"].astype(jnp.float32).mean(axis=(1, 2, 3))
        mask = batch["batch_mask"]
        return {"sum": (means * mask).sum(), "count": mask.sum()}, {"mean": means}

    def finalize(self, sums):
        return Evaluation({"mean": float(sums["sum"]) / float(sums["count"])}, {})


def test_evaluate_sums_padded_batches_and_keeps_the_first_examples():
    task = MeanTask(ml_collections.ConfigDict())
    batches = pipeline.eval_batches(task.source("val"), 4)  # 4 + 4 + 2 real of 4
    evaluation = task.evaluate(None, {}, "val", batches, place=lambda batch: batch)
    assert evaluation.metrics == {"mean": pytest.approx(4.5)}  # (0 + ... + 9) / 10
    examples = evaluation.artifacts["examples"]
    np.testing.assert_array_equal(examples["mean"], [0.0, 1.0, 2.0])
    assert examples["image"].shape == (3, 2, 2, 3)


def test_dummy_batch_has_the_training_shape_and_the_task_fields():
    batch = MeanTask(ml_collections.ConfigDict()).dummy_batch(5)
    assert batch["image"].shape == (5, 2, 2, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (5, 2, 2) and not batch["label"].any()

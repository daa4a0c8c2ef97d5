"""Segmentation evaluator: IoU, mIoU (both empty-class rules), pixel accuracy and the
confusion matrix summed over padded batches, on hand-made cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dllab_jax import metrics
from dllab_jax.data.base import ArraySource, SourceInfo
from dllab_jax.data.pipeline import eval_batches
from dllab_jax.evaluators import iou


def test_iou_and_miou_on_a_hand_made_case():
    # 3 classes. Labels and predictions of 8 pixels, one ignored (255).
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 255])
    predictions = np.array([0, 0, 1, 1, 1, 0, 0, 2])
    confusion = metrics.confusion_matrix(
        jnp.asarray(labels), jnp.asarray(predictions), 3, jnp.ones(8), jnp.int32
    )
    np.testing.assert_array_equal(confusion, [[2, 1, 0], [1, 2, 0], [1, 0, 0]])
    # class 0: TP 2, FP 2 (pixels 5, 6), FN 1 -> 2/5; class 1: TP 2, FP 1, FN 1 -> 2/4;
    # class 2: TP 0, FN 1 -> 0.
    np.testing.assert_allclose(iou.iou_per_class(confusion), [0.4, 0.5, 0.0])
    out = iou.finalize(
        {"confusion": confusion, "pixels": 7.0, "loss_sum": 3.5}, ("a", "b", "c")
    ).metrics
    assert out["miou"] == pytest.approx(0.3)
    assert out["iou/b"] == pytest.approx(0.5)
    assert out["pixel_accuracy"] == pytest.approx(4 / 7)
    assert out["loss"] == pytest.approx(0.5)


def test_a_class_absent_from_labels_and_predictions_counts_as_zero_iou_or_is_skipped():
    # The TU Wien handout's SegMetrics: "if the denominator ... is 0, use 0 as IoU for this
    # class", the mean over all classes. "skip" is the nan-mean of Freiburg and mmseg.
    # Class c is predicted once but never labelled: IoU 0 under both rules.
    confusion = np.array([[3, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    sums = {"confusion": confusion, "pixels": 5.0, "loss_sum": 0.0}
    names = ("a", "b", "absent", "c")
    zero = iou.finalize(sums, names).metrics
    assert zero["iou/absent"] == 0.0 and zero["iou/c"] == 0.0
    assert zero["miou"] == pytest.approx((0.75 + 1 + 0 + 0) / 4)
    skip = iou.finalize(sums, names, empty_class="skip").metrics
    assert np.isnan(skip["iou/absent"]) and skip["iou/c"] == 0.0
    assert skip["miou"] == pytest.approx((0.75 + 1 + 0) / 3)


def test_confusion_over_padded_batches_equals_the_whole_split():
    """Sums over eval batches (the last one padded) equal one confusion matrix of the split."""
    rng = np.random.default_rng(1)
    n, h, w, c = 11, 5, 6, 4
    predictions = rng.integers(0, c, size=(n, h, w)).astype(np.int32)
    labels = rng.integers(0, c, size=(n, h, w)).astype(np.int32)
    labels[rng.random((n, h, w)) < 0.2] = 255
    # The "model output" rides in the batch as `image`, so padding copies it like an image.
    source = ArraySource(
        {"image": predictions, "label": labels},
        SourceInfo(num_classes=c, class_names=tuple("abcd"), image_shape=(h, w, 1)),
    )
    total = None
    for batch in eval_batches(source, batch_size=4):
        logits = jax.nn.one_hot(batch["image"], c)
        total = metrics.add_sums(
            total, iou.segmentation_sums(logits, batch["label"], batch["batch_mask"])
        )
    keep = labels != 255
    expected = np.zeros((c, c), np.int64)
    np.add.at(expected, (labels[keep], predictions[keep]), 1)
    np.testing.assert_array_equal(np.asarray(total["confusion"]), expected)
    assert total["confusion"].dtype == jnp.int32  # exact beyond 2^24 pixels
    assert float(total["pixels"]) == keep.sum()

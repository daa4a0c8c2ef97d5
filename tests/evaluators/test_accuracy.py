"""Classification evaluator: accuracy, per-class accuracy and loss on hand-made batches, and
sums over padded batches equal to one batch."""

import jax.numpy as jnp
import numpy as np
import pytest

from dllab_jax import metrics
from dllab_jax.evaluators import accuracy


def test_classification_metrics_on_a_hand_made_batch():
    # 3 real examples + 1 padding. Class 0: 1/2 right, class 1: 1/1 right.
    logits = jnp.log(jnp.array([[0.7, 0.3], [0.2, 0.8], [0.1, 0.9], [0.9, 0.1]]))
    labels = jnp.array([0, 0, 1, 1])
    mask = jnp.array([1.0, 1.0, 1.0, 0.0])
    sums = accuracy.classification_sums(logits, labels, mask, 2)
    out = accuracy.finalize(sums).metrics
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert out["per_class_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    expected_loss = -(np.log(0.7) + np.log(0.2) + np.log(0.9)) / 3
    assert out["loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_sums_over_batches_equal_one_big_batch():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(10, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 10)
    whole = accuracy.classification_sums(logits, labels, np.ones(10), 4)
    parts = None
    for start in (0, 4, 8):  # 4 + 4 + 2 real of a padded 4
        idx = np.arange(start, start + 4) % 10
        mask = (np.arange(start, start + 4) < 10).astype(np.float32)
        parts = metrics.add_sums(
            parts, accuracy.classification_sums(logits[idx], labels[idx], mask, 4)
        )
    a, b = accuracy.finalize(whole).metrics, accuracy.finalize(parts).metrics
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-6)


def test_per_class_accuracy_skips_absent_classes():
    confusion = np.array([[2, 0, 0], [1, 1, 0], [0, 0, 0]])
    np.testing.assert_allclose(accuracy.per_class_accuracy(confusion)[:2], [1.0, 0.5])
    assert np.isnan(accuracy.per_class_accuracy(confusion)[2])

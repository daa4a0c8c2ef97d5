"""Metric primitives on hand-made cases: confusion counts, pixel cross-entropy, PSNR."""

import jax.numpy as jnp
import numpy as np

from dllab_jax import metrics


def test_confusion_matrix_counts_weights_and_ignores_out_of_range_labels():
    labels = jnp.array([0, 0, 1, 2, 2, 255])
    predictions = jnp.array([0, 1, 1, 2, 0, 0])
    weights = jnp.array([1, 1, 1, 1, 0, 1])  # the 2->0 pair is padding
    confusion = metrics.confusion_matrix(labels, predictions, 3, weights)
    np.testing.assert_array_equal(confusion, [[1, 1, 0], [0, 1, 0], [0, 0, 1]])


def test_pixel_cross_entropy_matches_numpy_and_ignores_255():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=(2, 3, 4))
    labels[0, 0, :2] = 255
    losses, valid = metrics.pixel_cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    safe = np.where(labels == 255, 0, labels)
    expected = -np.take_along_axis(log_probs, safe[..., None], -1)[..., 0] * (labels != 255)
    np.testing.assert_allclose(losses, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(valid, labels != 255)


def test_psnr_on_a_constant_error_and_clipping():
    target = np.full((2, 4, 4, 3), 0.5, np.float32)
    out = metrics.psnr(jnp.asarray(target + 0.1), jnp.asarray(target))
    np.testing.assert_allclose(out, [20.0, 20.0], rtol=1e-5)  # MSE 0.01 -> 20 dB
    # Predictions are clipped to [0, 1] before comparing.
    assert float(metrics.psnr(jnp.full((1, 2, 2, 3), 3.0), jnp.ones((1, 2, 2, 3)))[0]) >= 99

"""The small classifiers of dllab_jax/models/cnn.py: exact parameter counts, shapes, dropout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_checks import abstract_init, count_params, random_variables

from dllab_jax.models.cnn import CNN, LinearClassifier

IMAGES = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)


def cnn_param_formula(in_channels, widths, num_classes):
    """Two bias-free 3x3 convs and two BatchNorms (scale, bias) per block, then the head."""
    total, cin = 0, in_channels
    for w in widths:
        total += 9 * cin * w + 9 * w * w + 2 * (2 * w)
        cin = w
    return total + cin * num_classes + num_classes


@pytest.mark.parametrize(
    "image_shape, widths, num_classes",
    [((2, 32, 32, 3), (32, 64, 128), 10), ((2, 16, 12, 1), (8, 16), 5)],
)
def test_cnn_param_count_and_output_shape(image_shape, widths, num_classes):
    model = CNN(num_classes, widths=widths, dropout=0.3)
    variables = random_variables(model, image_shape)
    assert count_params(variables) == cnn_param_formula(image_shape[-1], widths, num_classes)
    logits, _ = model.apply(
        variables,
        jnp.ones(image_shape),
        train=True,
        mutable=["batch_stats"],
        rngs={"dropout": jax.random.key(1)},
    )
    assert logits.shape == (image_shape[0], num_classes)


def test_cnn_default_param_count():
    assert count_params(abstract_init(CNN(10), (1, 32, 32, 3))) == 288_746


def test_cnn_dropout_only_in_train_mode():
    images = jnp.asarray(IMAGES[:, :8, :8])
    model = CNN(10, widths=(8,), dropout=0.5)
    variables = random_variables(model, images.shape)
    np.testing.assert_array_equal(
        model.apply(variables, images, rngs={"dropout": jax.random.key(1)}),
        CNN(10, widths=(8,)).apply(variables, images),
    )
    train = lambda seed: model.apply(
        variables,
        images,
        train=True,
        mutable=["batch_stats"],
        rngs={"dropout": jax.random.key(seed)},
    )[0]
    assert not np.allclose(train(1), train(2))


def test_linear_classifier_param_count_and_logits():
    images = jnp.asarray(IMAGES[:, :8, :6])
    model = LinearClassifier(7)
    variables = random_variables(model, images.shape)
    assert count_params(variables) == 8 * 6 * 3 * 7 + 7
    assert count_params(abstract_init(LinearClassifier(10), (1, 32, 32, 3))) == 30_730
    head = variables["params"]["head"]
    expected = images.reshape(2, -1) @ head["kernel"] + head["bias"]
    np.testing.assert_allclose(model.apply(variables, images), expected, rtol=1e-5, atol=1e-5)

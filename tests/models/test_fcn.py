"""FCN-32 (dllab_jax/models/fcn.py, SPEC E2): output size, parameter count, and its transposed
conv against the numpy bilinear kernel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_checks import abstract_init, count_params, output_shape

from dllab_jax.models.fcn import FCN32, bilinear_kernel, upsample_x32
from dllab_jax.models.resnet import ResNet18


@pytest.mark.parametrize("size", [64, 96])
def test_fcn32_output_size_equals_input_size(size):
    assert output_shape(FCN32(num_classes=13), (2, size, size, 3)) == (2, size, size, 13)


def test_fcn32_param_count():
    variables = abstract_init(FCN32(num_classes=13), (1, 64, 64, 3))
    resnet18_trunk = 11_689_512 - (512 * 1000 + 1000)  # torchvision resnet18 minus its fc
    heads = (512 * 512 + 512) + (512 * 13 + 13)
    upsample = 64 * 64 * 13 * 13
    assert count_params(variables) == resnet18_trunk + heads + upsample
    # A ResNet18 checkpoint's backbone/... parameters and statistics load by name.
    resnet = abstract_init(ResNet18(num_classes=10), (1, 64, 64, 3))
    for collection in ("params", "batch_stats"):
        shapes = jax.tree.map(
            lambda x: x.shape, (variables[collection]["backbone"], resnet[collection]["backbone"])
        )
        assert shapes[0] == shapes[1]


def test_fcn32_upsample_is_bilinear():
    variables = abstract_init(FCN32(num_classes=3), (1, 64, 64, 3))
    assert variables["params"]["upsample"]["kernel"].shape == (64, 64, 3, 3)
    params = FCN32(num_classes=3).init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"]
    kernel = np.asarray(params["upsample"]["kernel"])
    np.testing.assert_array_equal(kernel, bilinear_kernel(64, 3))
    # The 1D factor is 1 - |i - 31.5| / 32: 1/64 at the ends, 63/64 in the middle.
    np.testing.assert_allclose(
        kernel[[0, 31, 32, 63], 31, 0, 0], np.array([1, 63, 63, 1]) / 64**2 * 63
    )
    assert np.all(kernel[:, :, 0, 1] == 0)  # no mixing between classes

    # A constant map upsamples to the same constant away from the 16-pixel border, and each
    # class stays in its own channel.
    x = jnp.ones((1, 3, 3, 3)) * jnp.array([1.0, -2.0, 5.0])
    y = upsample_x32(3).apply({"params": params["upsample"]}, x)
    assert y.shape == (1, 96, 96, 3)
    np.testing.assert_allclose(
        y[0, 16:80, 16:80], np.broadcast_to([1.0, -2.0, 5.0], (64, 64, 3)), rtol=1e-5
    )

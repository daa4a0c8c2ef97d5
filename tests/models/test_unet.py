"""U-Net (dllab_jax/models/unet.py, SPEC E2): parameter counts against a hand formula, shapes."""

from __future__ import annotations

import pytest
from model_checks import abstract_init, count_params, output_shape

from dllab_jax.models.unet import UNet


def unet_param_count(in_ch, num_classes, features, bottleneck, skips):
    def double_conv(c_in, c_out):  # two bias-free 3x3 convs, two BatchNorms (scale, bias)
        return 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + 2 * c_out

    total, c = 0, in_ch
    for f in features:
        total += double_conv(c, f)
        c = f
    total += double_conv(c, bottleneck)
    c = bottleneck
    for f in reversed(features):
        total += 4 * c * f + f  # 2x2 transposed conv with bias
        total += double_conv(2 * f if skips else f, f)
        c = f
    return total + features[0] * num_classes + num_classes


@pytest.mark.parametrize("skips", [True, False])
def test_unet_param_count_and_shape(skips):
    model = UNet(num_classes=13, skip_connections=skips)
    variables = abstract_init(model, (1, 64, 64, 3))
    assert count_params(variables) == unet_param_count(3, 13, (64, 128, 256, 512), 1024, skips)
    assert output_shape(model, (2, 64, 96, 3)) == (2, 64, 96, 13)


def test_unet_classic_param_count_value():
    # The classic U-Net (1 -> 2 classes, padded convs, BN, bias-free convs): 31,036,546 params.
    variables = abstract_init(UNet(num_classes=2), (1, 32, 32, 1))
    assert count_params(variables) == unet_param_count(1, 2, (64, 128, 256, 512), 1024, True)
    assert count_params(variables) == 31_036_546


def test_unet_small_colourisation_shape():
    model = UNet(num_classes=3, features=(8, 16), bottleneck=32, skip_connections=False)
    assert output_shape(model, (2, 32, 32, 1)) == (2, 32, 32, 3)
    variables = abstract_init(model, (1, 32, 32, 1))
    assert count_params(variables) == unet_param_count(1, 3, (8, 16), 32, False)

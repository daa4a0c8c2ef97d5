"""Image-regression evaluator: per-image L1, MSE, PSNR and the training loss, masked."""

import jax.numpy as jnp
import numpy as np
import pytest

from dllab_jax.evaluators import psnr


@pytest.mark.parametrize("loss, expected_loss", [("l1", 0.15), ("l2", 0.025)])
def test_image_error_sums_average_over_the_real_images(loss, expected_loss):
    targets = np.full((3, 4, 4, 3), 0.5, np.float32)
    # Image errors 0.1 and 0.2 everywhere; the third image is padding.
    outputs = targets + np.array([0.1, 0.2, 0.4], np.float32)[:, None, None, None]
    mask = jnp.array([1.0, 1.0, 0.0])
    sums = psnr.image_error_sums(jnp.asarray(outputs), jnp.asarray(targets), mask, loss)
    evaluation = psnr.finalize(sums)
    m = evaluation.metrics
    assert m["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert m["l1"] == pytest.approx(0.15, rel=1e-5)
    assert m["mse"] == pytest.approx((0.01 + 0.04) / 2, rel=1e-5)
    # 10 log10(1 / MSE) per image: 20 dB and 13.98 dB.
    assert m["psnr"] == pytest.approx((20.0 + 10 * np.log10(1 / 0.04)) / 2, rel=1e-5)
    assert m["gradient_l1"] == pytest.approx(0.0, abs=1e-6)  # constant errors have no edges
    assert evaluation.artifacts == {"psnr": m["psnr"], "gradient_l1": m["gradient_l1"]}


def test_gradient_error_ignores_a_colour_offset_and_counts_a_blurred_edge():
    # A vertical step edge 0 -> 0.6 between columns 1 and 2 of a 4x4 image.
    target = np.zeros((1, 4, 4, 1), np.float32)
    target[:, :, 2:] = 0.6
    ramp = np.array([0.0, 0.2, 0.4, 0.6], np.float32)[None, None, :, None]
    blurred = np.broadcast_to(ramp, target.shape)  # the same colours, the edge smeared

    def error(outputs):
        return float(psnr.gradient_l1(jnp.asarray(outputs), jnp.asarray(target))[0])

    assert error(target) == 0.0
    assert error(target + 0.3) == pytest.approx(0.0, abs=1e-6)  # another colour, same edges
    assert error(target * 0.5) == pytest.approx(0.3 / 3 / 2, rel=1e-5)  # half the contrast
    # Per row across: the step of 0.6 became 0.2 (0.4 off), and 0.2 appeared twice: 0.8 / 3;
    # down: no error. Mean of both directions.
    assert error(blurred) == pytest.approx(0.8 / 3 / 2, rel=1e-5)

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
    assert evaluation.artifacts == {"psnr": m["psnr"]}

"""The renderer of concept images (dllab_jax/data/procedural/concept_images.py)."""

from __future__ import annotations

import numpy as np
import pytest

from dllab_jax.data.procedural import concept_images


def test_render_concept_image():
    image = concept_images.render_concept_image(0, (0.1, 0.1, 0.9), 9.5, (14.0, 14.0))
    assert image.shape == (28, 28, 3) and image.dtype == np.float32
    assert image.min() == 0.0 and image.max() == pytest.approx(0.9)
    np.testing.assert_allclose(image[14, 14], (0.1, 0.1, 0.9), atol=1e-6)
    assert image[0, 0].max() == 0.0
    area = image[..., 2].sum() / 0.9
    assert area == pytest.approx(np.pi * 9.5**2, rel=0.02)
    triangle = concept_images.render_concept_image(
        1, (0.9, 0.1, 0.1), 8.0, (14.0, 14.0), image_size=(32, 28)
    )
    assert triangle.shape == (32, 28, 3)
    assert triangle[..., 0].sum() / 0.9 == pytest.approx(2 * 8.0**2, rel=0.02)
    # Apex at the top: the row just below the apex is narrower than the row above the base.
    assert (triangle[7, :, 0] > 0).sum() < (triangle[21, :, 0] > 0).sum()

"""The rasteriser of procedural scenes (dllab_jax/data/procedural/raster.py)."""

from __future__ import annotations

import numpy as np
import pytest

from dllab_jax.data.procedural import raster
from dllab_jax.data.procedural.scene import Background, Scene, SceneObject


def _flat_background(rgb=(0.5, 0.5, 0.5)) -> Background:
    return Background(rgb0=rgb, rgb1=rgb)


def test_rasterizer_coverage_area():
    """Summed coverage = the shape's area in pixels (exact for edges on pixel boundaries)."""
    side = 12.0  # pixels; circumradius = side / sqrt(2)
    square = SceneObject("square", (1, 0, 0), (0.5, 0.5), side / np.sqrt(2) / 32)
    rotated = SceneObject("square", (1, 0, 0), (0.47, 0.52), side / np.sqrt(2) / 32, 0.5)
    circle = SceneObject("circle", (1, 0, 0), (0.5, 0.5), 8.0 / 32)
    triangle = SceneObject("triangle", (1, 0, 0), (0.5, 0.55), 10.0 / 32, 1.0)
    coverage = raster.object_coverage([square, rotated, circle, triangle], 32)
    area = coverage.sum(axis=(1, 2))
    assert area[0] == pytest.approx(side**2, abs=1e-3)
    assert area[1] == pytest.approx(side**2, rel=0.01)
    assert area[2] == pytest.approx(np.pi * 8.0**2, rel=0.01)
    assert area[3] == pytest.approx(3 * np.sqrt(3) / 4 * 10.0**2, rel=0.01)
    # The axis-aligned square covers exactly pixels 10..21 in both directions.
    expected = np.zeros((32, 32))
    expected[10:22, 10:22] = 1
    np.testing.assert_allclose(coverage[0], expected, atol=1e-5)


def test_rasterizer_visible_object_map_and_colours():
    """The later object wins where two overlap; background is -1; colours composite."""
    # Square: x and y in [8, 16] px; circle: centre (18, 16) px, radius 5 px.
    square = SceneObject("square", (1.0, 0.0, 0.0), (0.375, 0.5), 8 / np.sqrt(2) / 32)
    circle = SceneObject("circle", (0.0, 0.0, 1.0), (0.5625, 0.5), 5 / 32)
    scene = Scene(_flat_background(), (square, circle))
    images, visible = raster.rasterize([scene, Scene(_flat_background(), ())], 32)
    assert images.shape == (2, 32, 32, 3) and visible.shape == (2, 32, 32)
    row = 13
    assert visible[0, row, 10] == 0  # square only
    assert visible[0, row, 15] == 1  # both: the circle is on top
    assert visible[0, row, 21] == 1  # circle only
    assert visible[0, row, 2] == -1 and visible[0, 2, 16] == -1
    np.testing.assert_allclose(images[0, row, 10], [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(images[0, row, 15], [0, 0, 1], atol=1e-6)
    np.testing.assert_allclose(images[0, row, 2], [0.5, 0.5, 0.5], atol=1e-6)
    assert (visible[1] == -1).all()
    np.testing.assert_allclose(images[1], 0.5, atol=1e-6)

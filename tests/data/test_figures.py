"""Figures of data sets (dllab_jax/data/figures.py)."""

from __future__ import annotations

from PIL import Image

from dllab_jax.data import figures
from dllab_jax.data.procedural import scene
from dllab_jax.data.sources import shapes


def test_save_example_grid_smoke(tmp_path):
    data = shapes.generate_shapes(0, "val", 40, (32, 32))
    path = figures.save_example_grid(
        str(tmp_path / "grid.png"), data["image"][:6], data["label"][:6], scene.CLASS_KINDS
    )
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100

"""The ImageFolder source `folder` (dllab_jax/data/sources/folder.py)."""

from __future__ import annotations

import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from dllab_jax.data import get_source
from dllab_jax.errors import UserError


def _write_folder(root, layout: dict[str, dict[str, list[tuple[str, tuple[int, int]]]]]):
    """Writes images root/<split>/<class>/<file> of the given (width, height)."""
    rng = np.random.default_rng(0)
    for split, classes in layout.items():
        for name, files in classes.items():
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
            for file, (w, h) in files:
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(os.path.join(root, split, name, file))


def folder_config(root, image_size=16) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(name="folder", root=str(root), image_size=image_size))


def test_folder_source(tmp_path):
    layout = {
        "train": {
            "wren": [("a.png", (16, 16)), ("b.jpg", (20, 12))],
            "crow": [("c.JPEG", (16, 16))],
            "owl": [("d.png", (30, 30)), ("e.png", (16, 16))],
        },
        "valid": {"owl": [("f.jpg", (24, 24))], "crow": [("g.png", (16, 16))]},
    }
    _write_folder(tmp_path, layout)
    (tmp_path / "train" / "owl" / "notes.txt").write_text("not an image")  # skipped
    # A grey (mode L) image must come back as RGB.
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(tmp_path / "train" / "wren" / "z.png")

    train = get_source(folder_config(tmp_path), "train")
    assert train.info.class_names == ("crow", "owl", "wren")
    assert train.info.image_shape == (16, 16, 3)
    assert len(train) == 6
    batch = train.get(np.arange(6))
    assert batch["image"].shape == (6, 16, 16, 3) and batch["image"].dtype == np.uint8
    np.testing.assert_array_equal(batch["label"], [0, 1, 1, 2, 2, 2])
    # e.png is 16x16 already: read unchanged. z.png: grey -> equal channels.
    with Image.open(tmp_path / "train" / "owl" / "e.png") as image:
        np.testing.assert_array_equal(batch["image"][2], np.asarray(image))
    assert (batch["image"][5] == 7).all()

    val = get_source(folder_config(tmp_path, image_size=8), "val")  # reads valid/
    np.testing.assert_array_equal(val.get([0, 1])["label"], [0, 1])
    assert val.get([1])["image"].shape == (1, 8, 8, 3)


def test_folder_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        get_source(folder_config(tmp_path / "missing"), "train")
    layout = {"train": {"a": [("x.png", (8, 8))]}, "test": {"b": [("y.png", (8, 8))]}}
    _write_folder(tmp_path, layout)
    with pytest.raises(UserError, match=r"no folder.*valid"):
        get_source(folder_config(tmp_path), "val")
    with pytest.raises(UserError, match=r"not in .*train: \['b'\]"):
        get_source(folder_config(tmp_path), "test")
    os.makedirs(tmp_path / "val" / "a")  # 'val' is the fallback name; it has no images
    with pytest.raises(UserError, match=r"val has no images"):
        get_source(folder_config(tmp_path), "val")

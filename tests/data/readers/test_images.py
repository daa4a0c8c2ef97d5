"""Image files (dllab_jax/data/readers/images.py): a corrupt file is named in one line, and
nearest resizing keeps label values."""

import ml_collections
import numpy as np
import pytest

from dllab_jax.data import get_source
from dllab_jax.data.readers import images
from dllab_jax.errors import UserError


def _truncate(image_file):
    image_file.write_bytes(image_file.read_bytes()[:60])  # cut off mid-pixels


def test_a_corrupt_image_is_named_in_one_line(birds_folder):
    broken = birds_folder / "train" / "CROW" / "3.png"
    _truncate(broken)
    config = ml_collections.ConfigDict(dict(name="folder", root=str(birds_folder)))
    config.image_size = 16
    source = get_source(config, "train")
    with pytest.raises(UserError, match=rf"image file {broken} cannot be read .*replace or remove"):
        source.get(np.arange(len(source)))
    np.testing.assert_array_equal(source.get([0])["label"], [0])  # the others still read


def test_resize_nearest_keeps_values():
    label = np.arange(12).reshape(3, 4)
    up = images.resize_nearest(label, (6, 8))
    np.testing.assert_array_equal(up[::2, ::2], label)
    assert set(np.unique(images.resize_nearest(label, (2, 2))).tolist()) <= set(range(12))

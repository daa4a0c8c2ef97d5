"""The `oxford_iiit_pet` source (dllab_jax/data/sources/oxford_iiit_pet.py) under tfds mock
data."""

from __future__ import annotations

import ml_collections
import numpy as np

from dllab_jax.data import get_source
from dllab_jax.data.sources import oxford_iiit_pet


def _all(source):
    return source.get(np.arange(len(source)))


def test_oxford_iiit_pet_under_mock_data():
    import tensorflow_datasets as tfds

    cfg = ml_collections.ConfigDict(dict(name="oxford_iiit_pet", image_size=64))
    with tfds.testing.mock_data(num_examples=4):
        source = get_source(cfg, "train")
    batch = _all(source)
    assert batch["image"].shape == (4, 64, 64, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (4, 64, 64) and batch["label"].dtype == np.int32
    assert set(np.unique(batch["label"]).tolist()) <= {0, 1, 2, 255}
    assert source.info.class_names == ("pet", "background", "border")
    # The trimap mapping itself: 1 pet -> 0, 2 background -> 1, 3 border -> 2.
    fn = oxford_iiit_pet.pet_example_fn((2, 2))
    out = fn(
        {
            "image": np.zeros((4, 4, 3), np.uint8),
            "segmentation_mask": np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 0, 0], [3, 3, 0, 0]])[
                ..., None
            ],
        }
    )
    np.testing.assert_array_equal(out["label"], [[0, 1], [2, 255]])

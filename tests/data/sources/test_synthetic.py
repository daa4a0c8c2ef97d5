"""The synthetic stand-in source (dllab_jax/data/sources/synthetic.py)."""

import ml_collections
import numpy as np
import pytest

from dllab_jax import data
from dllab_jax.errors import UserError


def test_synthetic_source_is_random_in_range_and_deterministic():
    config = ml_collections.ConfigDict(
        dict(name="synthetic", image_size=(6, 10), num_classes=4, labels="dense")
    )
    source = data.get_source(config, "train")
    assert source.info.image_shape == (6, 10, 3) and source.info.num_classes == 4
    batch = source.get(np.arange(8))
    assert batch["image"].shape == (8, 6, 10, 3) and batch["label"].shape == (8, 6, 10)
    assert batch["image"].std() > 50 and set(np.unique(batch["label"])) == {0, 1, 2, 3}
    np.testing.assert_array_equal(source.get(np.arange(8))["image"], batch["image"])
    with pytest.raises(UserError, match="labels must be 'class' or 'dense'"):
        data.get_source(ml_collections.ConfigDict(dict(name="synthetic", labels="x")), "train")

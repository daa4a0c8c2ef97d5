"""The `cityscapes` source (dllab_jax/data/sources/cityscapes.py): the id mapping, and
tfds mock data."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from dllab_jax.data import get_source
from dllab_jax.data.sources import cityscapes
from dllab_jax.errors import UserError


def _all(source):
    return source.get(np.arange(len(source)))


def test_cityscapes_id_mapping_hand_made():
    ids = np.array([[0, 7, 8, 11], [24, 26, 33, 34], [-1, 255, 9, 23]])
    expected = np.array([[255, 0, 1, 2], [11, 13, 18, 255], [255, 255, 255, 10]])
    np.testing.assert_array_equal(cityscapes.cityscapes_train_ids(ids), expected)
    assert len(cityscapes.CITYSCAPES_CLASS_NAMES) == 19
    assert sorted(cityscapes.CITYSCAPES_ID_TO_TRAIN_ID.values()) == list(range(19))


def test_cityscapes_not_prepared_is_a_user_error(tmp_path):
    cfg = ml_collections.ConfigDict(dict(name="cityscapes", data_dir=str(tmp_path)))
    with pytest.raises(UserError, match="manual_dir"):
        get_source(cfg, "train")


def test_cityscapes_under_mock_data():
    import tensorflow_datasets as tfds

    cfg = ml_collections.ConfigDict(dict(name="cityscapes", image_size=64))
    with tfds.testing.mock_data(num_examples=2):
        source = get_source(cfg, "val")
    batch = _all(source)
    assert batch["image"].shape == (2, 64, 64, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (2, 64, 64) and batch["label"].dtype == np.int32
    assert set(np.unique(batch["label"]).tolist()) <= set(range(19)) | {255}
    assert source.info.num_classes == 19

"""`cityscapes`: Cityscapes fine annotations from tfds (manual download), 19 train ids."""

from __future__ import annotations

import os

import ml_collections
import numpy as np

from dllab_jax import registry
from dllab_jax.data.base import IGNORE, ArraySource
from dllab_jax.data.checks import image_size_key
from dllab_jax.data.readers.tfds import (
    ExampleFn,
    _import_tfds,
    dense_example_fn,
    dense_source,
    load_tfds_arrays,
    tfds_builder,
    tfds_split,
)
from dllab_jax.errors import UserError

CITYSCAPES_CLASS_NAMES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
# Cityscapes label id (gtFine *_labelIds.png) -> train id; every other id (0-6 void, 9
# parking, 10 rail track, 14-16 guard rail/bridge/tunnel, 18 polegroup, 29 caravan,
# 30 trailer, -1/255 license plate) -> 255.
CITYSCAPES_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
_CITYSCAPES_LUT = np.full(256, IGNORE, np.int32)
for _id, _train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
    _CITYSCAPES_LUT[_id] = _train_id
CITYSCAPES_SPLITS = {"train": "train", "val": "validation", "test": "validation"}
CITYSCAPES_TFDS_NAME = "cityscapes/semantic_segmentation"


def cityscapes_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Maps Cityscapes label ids (any integer array) to the 19 train ids, 255 = ignore."""
    ids = np.asarray(label_ids).astype(np.int64)
    out = np.full(ids.shape, IGNORE, np.int32)
    valid = (ids >= 0) & (ids < 256)
    out[valid] = _CITYSCAPES_LUT[ids[valid]]
    return out


def cityscapes_example_fn(image_size: tuple[int, int], resample: str = "nearest") -> ExampleFn:
    """Per-example function for load_tfds_arrays: resizes image and labels to `image_size`."""
    return dense_example_fn(
        "image_left", "segmentation_label", image_size, resample, cityscapes_train_ids
    )


def _prepare_cityscapes(data_dir: str | None, manual_dir: str) -> None:
    tfds = _import_tfds()
    builder = tfds_builder(CITYSCAPES_TFDS_NAME, data_dir, download=False)
    if builder.is_prepared():
        return
    try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
    except Exception as e:
        raise UserError(
            f"could not prepare {CITYSCAPES_TFDS_NAME} from manual_dir {manual_dir}: "
            f"{type(e).__name__}: {e}. Put leftImg8bit_trainvaltest.zip and "
            "gtFine_trainvaltest.zip (from https://www.cityscapes-dataset.com, login needed) "
            "there"
        ) from e


@registry.data_sources.register("cityscapes")
def make_cityscapes(data_config: ml_collections.ConfigDict, split: str) -> ArraySource:
    """Cityscapes (fine annotations) from tfds, 19 train ids, held in memory.

    Reads `data_dir` (None: tfds default), `manual_dir` (the folder with the downloaded
    leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip; when set and the data set is not
    prepared, it is prepared from there), `image_size` (64), `image_resample` ('nearest', or
    'bilinear'; labels are always nearest) and `train_split` / `val_split` / `test_split`
    (defaults 'train', 'validation', 'validation': the test labels are not public).
    """
    split_string = tfds_split(data_config, "cityscapes", split, CITYSCAPES_SPLITS)
    size = image_size_key(data_config, 64)
    data_dir = data_config.get("data_dir", None)
    manual_dir = data_config.get("manual_dir", None)
    if manual_dir:
        _prepare_cityscapes(data_dir, os.path.expanduser(str(manual_dir)))
    try:
        arrays, _ = load_tfds_arrays(
            CITYSCAPES_TFDS_NAME,
            split_string,
            data_dir=data_dir,
            download=False,
            keys=("image_left", "segmentation_label"),
            example_fn=cityscapes_example_fn(size, data_config.get("image_resample", "nearest")),
        )
    except UserError as e:
        if "not prepared" not in str(e):
            raise
        raise UserError(
            f"Cityscapes is not prepared (tfds {CITYSCAPES_TFDS_NAME}, data_dir "
            f"{data_dir or 'tfds default'}). It needs a manual download: get "
            "leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from "
            "https://www.cityscapes-dataset.com (login needed), put them in a folder and set "
            "config.data.manual_dir to it (tfds prepares the data on the next run)"
        ) from None
    return dense_source(arrays, CITYSCAPES_CLASS_NAMES, size)

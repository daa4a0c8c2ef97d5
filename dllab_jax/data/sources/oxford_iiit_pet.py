"""`oxford_iiit_pet`: Oxford-IIIT Pet trimaps from tfds (0 pet, 1 background, 2 border)."""

from __future__ import annotations

import ml_collections
import numpy as np

from dllab_jax import registry
from dllab_jax.data.base import IGNORE, ArraySource
from dllab_jax.data.checks import image_size_key
from dllab_jax.data.readers.tfds import (
    ExampleFn,
    dense_example_fn,
    dense_source,
    load_configured,
)

PET_CLASS_NAMES = ("pet", "background", "border")
PET_SPLITS = {"train": "train", "val": "test", "test": "test"}

# Trimap value -> label: 1 pet -> 0, 2 background -> 1, 3 border -> 2, anything else (only
# under tfds mock data) -> ignore.
_PET_LUT = np.full(256, IGNORE, np.int32)
_PET_LUT[1:4] = (0, 1, 2)


def pet_example_fn(image_size: tuple[int, int], resample: str = "nearest") -> ExampleFn:
    """Per-example function for load_tfds_arrays: resizes image and trimap to `image_size`."""
    return dense_example_fn(
        "image",
        "segmentation_mask",
        image_size,
        resample,
        lambda trimap: _PET_LUT[trimap.astype(np.int64)],
    )


@registry.data_sources.register("oxford_iiit_pet")
def make_oxford_iiit_pet(data_config: ml_collections.ConfigDict, split: str) -> ArraySource:
    """Oxford-IIIT Pet trimaps from tfds, held in memory.

    Reads `data_dir` (None: tfds default), `download` (False), `image_size` (64),
    `image_resample` ('nearest' as the handout; or 'bilinear'; masks are always nearest) and
    `train_split` / `val_split` / `test_split` (defaults 'train' (trainval, 3680), 'test',
    'test').
    """
    size = image_size_key(data_config, 64)
    arrays, _ = load_configured(
        data_config,
        "oxford_iiit_pet",
        split,
        PET_SPLITS,
        keys=("image", "segmentation_mask"),
        example_fn=pet_example_fn(size, data_config.get("image_resample", "nearest")),
    )
    return dense_source(arrays, PET_CLASS_NAMES, size)

"""`cifar10`: CIFAR-10 from tfds, in the handout's split and the published file order."""

from __future__ import annotations

import ml_collections
import numpy as np

from dllab_jax import registry
from dllab_jax.data.base import ArraySource, SourceInfo
from dllab_jax.data.readers.tfds import class_names_from_info, load_configured

CIFAR10_CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
# The handout's split: data_batch_1..4 for training, data_batch_5 for validation. tfds stores
# cifar10 shuffled, so these slices are taken after sorting by `id` (the position in the
# original files; see `readers.tfds._read_in_file_order`).
CIFAR10_SPLITS = {"train": "train[:40000]", "val": "train[40000:]", "test": "test"}


@registry.data_sources.register("cifar10")
def make_cifar10(data_config: ml_collections.ConfigDict, split: str) -> ArraySource:
    """CIFAR-10 from tfds, held in memory: `image` [n, 32, 32, 3] uint8, `label` [n] int32.

    Reads `data_config.data_dir` (None: tfds default), `train_split` / `val_split` /
    `test_split` (tfds split strings; defaults 'train[:40000]', 'train[40000:]', 'test') and
    `download` (default False).
    """
    arrays, info = load_configured(
        data_config, "cifar10", split, CIFAR10_SPLITS, keys=("image", "label"), order_key="id"
    )
    images = arrays["image"].astype(np.uint8)
    labels = arrays["label"].astype(np.int32)
    class_names = class_names_from_info(info, fallback=CIFAR10_CLASS_NAMES)
    source_info = SourceInfo(
        num_classes=len(class_names), class_names=class_names, image_shape=images.shape[1:]
    )
    return ArraySource({"image": images, "label": labels}, source_info)

"""`synthetic`: random images and labels of a given shape, for timing without a data set.

A faithful preset names a data set that may not be on disk (CIFAR-10, the CARLA folders);
the benchmark swaps in this source with the same image shape and class count so the same
model and train step can be timed anywhere. Pixels are uniform random bytes (never all
zeros: some kernels take shortcuts on zeros) and labels uniform over the classes.

Keys of `config.data`: image_size (int or (H, W)), channels (3), num_classes (10),
labels ('class': one per image, 'dense': one per pixel), num_examples (1024), seed (0).
"""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections
import numpy as np

from dllab_jax import registry
from dllab_jax.data.base import SourceInfo
from dllab_jax.data.checks import image_size_key, int_key
from dllab_jax.errors import UserError


class SyntheticSource:
    """Examples made on demand from (seed, index): no memory held, any length."""

    def __init__(self, image_shape, num_classes: int, dense: bool, num_examples: int, seed: int):
        self.info = SourceInfo(
            num_classes=num_classes,
            class_names=tuple(f"class_{i}" for i in range(num_classes)),
            image_shape=tuple(image_shape),
        )
        self._dense, self._len, self._seed = dense, num_examples, seed

    def __len__(self) -> int:
        return self._len

    def get(self, indices: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64)
        h, w, c = self.info.image_shape
        # One generator per batch, seeded by its first index: deterministic and cheap.
        first = int(indices[0]) if len(indices) else 0
        rng = np.random.default_rng((self._seed, first, len(indices)))
        n = len(indices)
        label_shape = (n, h, w) if self._dense else (n,)
        return {
            "image": rng.integers(0, 256, (n, h, w, c), dtype=np.uint8),
            "label": rng.integers(0, self.info.num_classes, label_shape).astype(np.int32),
        }


@registry.data_sources.register("synthetic")
def make_synthetic(data_config: ml_collections.ConfigDict, split: str) -> SyntheticSource:
    del split  # every split is alike
    height, width = image_size_key(data_config, 32)
    labels = data_config.get("labels", "class")
    if labels not in ("class", "dense"):
        raise UserError(f"config.data.labels must be 'class' or 'dense', got {labels!r}")
    return SyntheticSource(
        (height, width, int_key(data_config, "channels", 3, 1)),
        num_classes=int_key(data_config, "num_classes", 10, 1),
        dense=labels == "dense",
        num_examples=int_key(data_config, "num_examples", 1024, 1),
        seed=int_key(data_config, "seed", 0, 0),
    )

"""The contract every data source fulfils."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Protocol

import ml_collections
import numpy as np
from PIL import Image

from dllab_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    """What a task needs to know about a split without reading it.

    Attributes:
      num_classes: number of classes of `label` (0 where there are no classes).
      class_names: one name per class, in label order.
      image_shape: (H, W, C) of `image` as the source returns it (before augmentation).
    """

    num_classes: int
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]


class Source(Protocol):
    """A random-access split: `len(source)` examples, `source.get(indices)` a batch of them.

    `get` returns a dict of numpy arrays with leading dimension `len(indices)`: at least
    `image: [n, H, W, C] uint8`; classification sources add `label: [n] int32`, dense
    prediction sources `label: [n, H, W] int32` (255 = ignore). Examples must be
    deterministic: the same index always gives the same example.
    """

    info: SourceInfo

    def __len__(self) -> int: ...

    def get(self, indices: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]: ...


class ArraySource:
    """A source held in memory as a dict of equally long numpy arrays."""

    def __init__(self, arrays: Mapping[str, np.ndarray], info: SourceInfo):
        lengths = {k: len(v) for k, v in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"arrays of unequal length: {lengths}")
        self.arrays = dict(arrays)
        self.info = info

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def get(self, indices: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64)
        return {k: v[indices] for k, v in self.arrays.items()}


def int_key(data_config: ml_collections.ConfigDict, key: str, default: int, minimum: int) -> int:
    """`data_config[key]` (or `default`) as an int >= `minimum`, else a UserError."""
    value = data_config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise UserError(f"config.data.{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def image_size_key(
    data_config: ml_collections.ConfigDict, default: int, minimum: int = 1
) -> tuple[int, int]:
    """`data_config.image_size` (an int or (height, width)) as (H, W), else a UserError."""
    value = data_config.get("image_size", default)
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        value = (value, value)
    try:
        if isinstance(value, str):
            raise TypeError
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(
            f"config.data.image_size must be an int or (height, width), got {value!r}"
        ) from None
    if min(h, w) < minimum:
        raise UserError(f"config.data.image_size must be at least {minimum} pixels, got {value!r}")
    return h, w


def load_image(path: str) -> Image.Image:
    """An image file decoded by PIL (pixels loaded, file closed).

    Raises:
      UserError: the file is missing, truncated or not an image, naming it; sources read
        lazily, so this can come mid-run, and the training loop saves before it stops.
    """
    try:
        image = Image.open(path)
        image.load()  # decodes now (and closes the file), so a broken file fails here
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(
            f"image file {path} cannot be read ({reason}); replace or remove it"
        ) from None
    return image

"""The contract every data source fulfils."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

# The ignore label of dense (per-pixel) labels: the loss and the metrics skip it.
IGNORE = 255


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

    A source of texts (the caption sources) also offers `text_corpus() -> list[str]`: every
    text of the split in example order, repeats kept, for a tokenizer to learn from.
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


def caption_texts(captions: np.ndarray) -> list[str]:
    """The captions of a `[n, K]` caption array in example order, empty slots dropped."""
    return [str(c) for c in captions.reshape(-1) if c]


class CaptionArraySource(ArraySource):
    """An `ArraySource` whose `captions` [n, K] (object, '' = no caption) are its text corpus."""

    def text_corpus(self) -> list[str]:
        return caption_texts(self.arrays["captions"])

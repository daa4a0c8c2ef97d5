"""Random image augmentation on numpy batches, as torchvision's transforms do it.

`make_augment(aug_config)` returns `augment(batch, rng) -> batch`, which applies, in this
order and independently per example: RandomCrop with zero padding, RandomResizedCrop, and a
horizontal flip. A dense label map (`batch['label']` of shape [n, H, W]) gets the same
geometry with nearest interpolation and 255 (ignore) where padding shows, so segmentation
reuses this module; every other key passes through unchanged.

In a multi-process run each process augments only its rows of a global batch
(`BatchRows`): the draws are made for the whole batch and each process keeps its rows, so the
examples come out exactly as one process would make them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import ml_collections
import numpy as np
from PIL import Image

from dllab_jax.data.base import IGNORE

IGNORE_LABEL = IGNORE

Augment = Callable[..., dict[str, np.ndarray]]  # (batch, rng[, rows=BatchRows]) -> batch


class BatchRows(NamedTuple):
    """The rows [start, stop) of a global batch of `size` examples that a host batch holds."""

    start: int
    stop: int
    size: int

    def of(self, drawn: np.ndarray) -> np.ndarray:
        """This host's rows of values drawn for the whole batch."""
        return drawn[self.start : self.stop]


def takes_rows(augment: Augment) -> Augment:
    """Marks `augment` as accepting `rows=BatchRows(...)` (the pipeline then reads only a
    process's rows; an augmentation without the mark gets the whole batch)."""
    augment.takes_rows = True
    return augment


def _draw(draw: Callable[[int], np.ndarray], n: int, rows: BatchRows | None) -> np.ndarray:
    """`draw(count)` for the whole batch, cut to this host's rows."""
    return draw(n) if rows is None else rows.of(draw(rows.size))


def random_crop(
    images: np.ndarray,
    labels: np.ndarray | None,
    padding: int,
    rng: np.random.Generator,
    rows: BatchRows | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """torchvision RandomCrop(size, padding): zero-pad by `padding`, crop a random window back.

    Args:
      images: [n, H, W, C].
      labels: [n, H, W] label maps (padded with `IGNORE_LABEL`) or None.
      padding: pixels of padding on every side.
      rng: draws the window offsets, [n, 2] integers in [0, 2 * padding].
      rows: the rows of a larger batch these examples are (None: the whole batch).

    Returns:
      images and labels of the input shapes.
    """
    n, h, w = images.shape[:3]
    offsets = _draw(lambda count: rng.integers(0, 2 * padding + 1, size=(count, 2)), n, rows)
    # Gather every example's window at once: rows [n, H, 1], cols [n, 1, W].
    batch_idx = np.arange(n)[:, None, None]
    rows = (offsets[:, 0, None] + np.arange(h))[:, :, None]
    cols = (offsets[:, 1, None] + np.arange(w))[:, None, :]
    pad = ((0, 0), (padding, padding), (padding, padding))
    padded = np.pad(images, (*pad, (0, 0)) if images.ndim == 4 else pad)
    images = padded[batch_idx, rows, cols]
    if labels is not None:
        padded_labels = np.pad(labels, pad, constant_values=IGNORE_LABEL)
        labels = padded_labels[batch_idx, rows, cols]
    return images, labels


def rrc_params(
    height: int,
    width: int,
    scale: Sequence[float],
    ratio: Sequence[float],
    rng: np.random.Generator,
) -> tuple[int, int, int, int]:
    """torchvision RandomResizedCrop.get_params: (top, left, crop height, crop width).

    Up to ten tries of a random area fraction in `scale` and a log-uniform aspect ratio in
    `ratio`; if none fits, a centre crop with the ratio clamped to `ratio`.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def _resize_box(
    array: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int], resample: int
) -> np.ndarray:
    """Crops `box` = (top, left, h, w) from a [H, W] or [H, W, C] array and resizes to `size`.

    PIL does both in one call. Multi-channel images other than RGB go channel by channel.
    """
    top, left, h, w = box
    pil_box = (left, top, left + w, top + h)
    out_hw = (size[1], size[0])
    if array.ndim == 3 and array.shape[2] != 3:
        return np.stack(
            [_resize_box(array[..., c], box, size, resample) for c in range(array.shape[2])],
            axis=-1,
        )
    image = Image.fromarray(array)
    return np.asarray(image.resize(out_hw, resample, box=pil_box), dtype=array.dtype)


def random_resized_crop(
    images: np.ndarray,
    labels: np.ndarray | None,
    scale: Sequence[float],
    ratio: Sequence[float],
    rng: np.random.Generator,
    rows: BatchRows | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """torchvision RandomResizedCrop to the input size: bilinear for images, nearest for labels.

    Args:
      images: [n, H, W, C] uint8.
      labels: [n, H, W] integer label maps or None.
      scale: range of the crop's area as a fraction of the image.
      ratio: range of the crop's aspect ratio (width / height).
      rng: draws the crops, example by example.
      rows: the rows of a larger batch these examples are (None: the whole batch); the
        boxes of the other rows are drawn too, to keep the generator's sequence.

    Returns:
      images and labels of the input shapes.
    """
    n, h, w = images.shape[:3]
    images_out = np.empty_like(images)
    labels_out = None if labels is None else np.empty_like(labels)
    boxes = [rrc_params(h, w, scale, ratio, rng) for _ in range(n if rows is None else rows.size)]
    boxes = boxes if rows is None else boxes[rows.start : rows.stop]
    for i, box in enumerate(boxes):
        images_out[i] = _resize_box(images[i], box, (h, w), Image.Resampling.BILINEAR)
        if labels is not None:
            # Mode 'I' (int32) keeps label values above 255 and resizes with nearest.
            label = _resize_box(labels[i].astype(np.int32), box, (h, w), Image.Resampling.NEAREST)
            labels_out[i] = label
    return images_out, labels_out


def random_hflip(
    images: np.ndarray,
    labels: np.ndarray | None,
    rng: np.random.Generator,
    p: float = 0.5,
    rows: BatchRows | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Flips each example left-right with probability `p` (one draw per example)."""
    flip = _draw(rng.random, len(images), rows) < p
    images = images.copy()
    images[flip] = images[flip, :, ::-1]
    if labels is not None:
        labels = labels.copy()
        labels[flip] = labels[flip, :, ::-1]
    return images, labels


def make_augment(aug_config: ml_collections.ConfigDict | None) -> Augment | None:
    """Builds the augmentation of `aug_config`; None when nothing is enabled.

    Reads `random_crop_padding` (int, 0 = off), `random_resized_crop` (bool), `rrc_scale`
    (default (0.08, 1.0)), `rrc_ratio` (default (3/4, 4/3)) and `hflip` (bool, p = 0.5); or,
    with `name = 'voc'`, the VOC segmentation recipe of `voc_augment.voc_train_augment`
    (`crop_size`, `short_side_range`, `hflip`).

    Returns:
      `augment(batch, rng) -> batch`: transforms `batch['image']` ([n, H, W, C] uint8) and,
      when it is [n, H, W], `batch['label']`; other keys pass through. The output depends
      only on the batch and the generator's state.
    """
    if aug_config is None:
        return None
    if aug_config.get("name") == "voc":
        # Variable-size images padded to one size: resize, crop and flip per example.
        from dllab_jax.data.voc_augment import voc_train_augment

        return voc_train_augment(
            crop_size=aug_config.crop_size,
            short_side_range=tuple(aug_config.short_side_range),
            hflip=aug_config.hflip,
        )
    padding = int(aug_config.get("random_crop_padding", 0) or 0)
    rrc = bool(aug_config.get("random_resized_crop", False))
    scale = tuple(aug_config.get("rrc_scale", (0.08, 1.0)))
    ratio = tuple(aug_config.get("rrc_ratio", (3.0 / 4.0, 4.0 / 3.0)))
    hflip = bool(aug_config.get("hflip", False))
    if not (padding > 0 or rrc or hflip):
        return None

    @takes_rows
    def augment(
        batch: dict[str, np.ndarray], rng: np.random.Generator, rows: BatchRows | None = None
    ) -> dict[str, np.ndarray]:
        images = batch["image"]
        label = batch.get("label")
        dense = label if label is not None and label.ndim == 3 else None
        if padding > 0:
            images, dense = random_crop(images, dense, padding, rng, rows)
        if rrc:
            images, dense = random_resized_crop(images, dense, scale, ratio, rng, rows)
        if hflip:
            images, dense = random_hflip(images, dense, rng, rows=rows)
        out = dict(batch)
        out["image"] = images
        if dense is not None:
            out["label"] = dense
        return out

    return augment

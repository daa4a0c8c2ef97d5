"""The training augmentation of the VOC segmentation handout, for padded VOC batches
(`sources/voc_segmentation.py` pads every example to [P, P] and gives its true `height` and
`width`).

`voc_train_augment`, as the handout's train transform, per example
of a padded batch: take the true region (`height` x `width`), resize it so that its shorter
side is a random integer in [256, 300] (image bilinear, label nearest), random-crop 256x256
(padding first with 0 / 255 where the resized image is smaller than the crop, as torchvision's
RandomCrop(pad_if_needed=True)), and flip left-right with probability 0.5, image and label
together. The output batch is [n, 256, 256] with `height` = `width` = 256.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from PIL import Image

from dllab_jax.data.base import IGNORE
from dllab_jax.errors import UserError

Augment = Callable[[dict[str, np.ndarray], np.random.Generator], dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class TrainAugmentParams:
    """The random choices of `voc_train_augment` for one example.

    Attributes:
      short_side: the drawn length of the shorter side after resizing.
      resized: (H, W) after resizing (the longer side scaled as torchvision's Resize(int)).
      pad: (rows, cols) of fill added on each side before cropping (0 unless the resized image
        is smaller than the crop).
      top, left: the crop's corner in the padded, resized image.
      crop_size: the side of the square crop.
      flip: whether the crop is flipped left-right.
    """

    short_side: int
    resized: tuple[int, int]
    pad: tuple[int, int]
    top: int
    left: int
    crop_size: int
    flip: bool


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(H, W) with the shorter side `short_side`, as torchvision's Resize(short_side).

    The longer side is int(short_side * long / short) (truncated, as torchvision does).
    """
    if width <= height:
        return int(short_side * height / width), short_side
    return short_side, int(short_side * width / height)


def sample_train_params(
    height: int,
    width: int,
    rng: np.random.Generator,
    crop_size: int = 256,
    short_side_range: tuple[int, int] = (256, 300),
    hflip: bool = True,
) -> TrainAugmentParams:
    """Draws one example's augmentation: short side, crop corner, flip (in that order).

    Args:
      height, width: the true size of the example.
      rng: the generator; draws 1 integer for the short side, 2 for the crop, 1 float for the
        flip (when `hflip`).
      crop_size: side of the square crop.
      short_side_range: inclusive range of the shorter side after resizing.
      hflip: flip with probability 0.5; False never flips.
    """
    short_side = int(rng.integers(short_side_range[0], short_side_range[1] + 1))
    h, w = resized_size(height, width, short_side)
    # torchvision RandomCrop(pad_if_needed=True) pads the full deficit on *both* sides.
    pad = (max(crop_size - h, 0), max(crop_size - w, 0))
    top = int(rng.integers(0, h + 2 * pad[0] - crop_size + 1))
    left = int(rng.integers(0, w + 2 * pad[1] - crop_size + 1))
    flip = bool(rng.random() < 0.5) if hflip else False
    return TrainAugmentParams(short_side, (h, w), pad, top, left, crop_size, flip)


def apply_train_params(
    image: np.ndarray, label: np.ndarray, params: TrainAugmentParams
) -> tuple[np.ndarray, np.ndarray]:
    """Resizes, pads, crops and flips one unpadded example as `params` says.

    Args:
      image: [h, w, 3] uint8 (the true region, no padding).
      label: [h, w] integer label map.
      params: from `sample_train_params(h, w, ...)`.

    Returns:
      image [crop, crop, 3] uint8 (bilinear, 0 where padding shows) and label [crop, crop]
      int32 (nearest, 255 where padding shows).
    """
    h, w = params.resized
    # PIL for both, so the image and the label share one geometric mapping (pixel centres).
    pil_image = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    image = np.asarray(pil_image.resize((w, h), Image.Resampling.BILINEAR), dtype=np.uint8)
    # Mode 'I' (int32): nearest resizing never invents a value that was not in the label.
    pil_label = Image.fromarray(np.ascontiguousarray(label, dtype=np.int32))
    label = np.asarray(pil_label.resize((w, h), Image.Resampling.NEAREST), dtype=np.int32)
    pad_h, pad_w = params.pad
    if pad_h or pad_w:
        image = np.pad(image, ((pad_h, pad_h), (pad_w, pad_w), (0, 0)))
        label = np.pad(label, ((pad_h, pad_h), (pad_w, pad_w)), constant_values=IGNORE)
    c = params.crop_size
    image = image[params.top : params.top + c, params.left : params.left + c]
    label = label[params.top : params.top + c, params.left : params.left + c]
    if params.flip:
        image, label = image[:, ::-1], label[:, ::-1]
    return image, label


def voc_train_augment(
    crop_size: int = 256, short_side_range: tuple[int, int] = (256, 300), hflip: bool = True
) -> Augment:
    """The handout's training augmentation for padded VOC batches (see the module docstring).

    Args:
      crop_size: side of the square output.
      short_side_range: (low, high), the inclusive range of the shorter side after resizing.
      hflip: random left-right flip with probability 0.5.

    Returns:
      `augment(batch, rng) -> batch`: per example, the true region (`batch['height']` x
      `batch['width']`; the whole image when those keys are absent) of `image` [n, H, W, 3]
      uint8 and `label` [n, H, W] is resized, cropped and flipped to `image` [n, crop, crop, 3]
      uint8 and `label` [n, crop, crop] int32; `height` and `width` become crop_size. Other
      keys pass through. The output depends only on the batch and the generator's state.
    """
    low, high = (int(v) for v in short_side_range)
    if crop_size < 1 or low < 1 or high < low:
        raise UserError(
            f"the VOC train augmentation needs crop_size >= 1 and 1 <= low <= high in "
            f"short_side_range, got crop_size={crop_size}, short_side_range={short_side_range}"
        )

    def augment(batch: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        images, labels = batch["image"], batch["label"]
        n, full_h, full_w = images.shape[:3]
        heights = batch.get("height", np.full(n, full_h))
        widths = batch.get("width", np.full(n, full_w))
        out_images = np.empty((n, crop_size, crop_size, 3), np.uint8)
        out_labels = np.empty((n, crop_size, crop_size), np.int32)
        for k in range(n):
            h, w = int(heights[k]), int(widths[k])
            params = sample_train_params(h, w, rng, crop_size, (low, high), hflip)
            out_images[k], out_labels[k] = apply_train_params(
                images[k, :h, :w], labels[k, :h, :w], params
            )
        out = dict(batch)
        out["image"] = out_images
        out["label"] = out_labels
        out["height"] = np.full(n, crop_size, np.int32)
        out["width"] = np.full(n, crop_size, np.int32)
        return out

    return augment

"""PASCAL VOC 2012 semantic segmentation, read lazily from the published folder layout.

The data source of the Freiburg DL Lab 2023 exercise (segmentation heads on a frozen DINO
ViT).

Layout (`config.data.root` is the `VOCdevkit/VOC2012` folder of VOCtrainval_11-May-2012.tar):

- `JPEGImages/<id>.jpg`: the images, at most 500x500 pixels.
- `SegmentationClass/<id>.png`: palette ('P' mode) PNGs whose pixel values *are* the class
  ids, 0 background and 1..20 the classes of `VOC_CLASS_NAMES`, with 255 on the unlabelled
  object borders. They are read without converting to RGB, so the palette colours never
  matter.
- `ImageSets/Segmentation/{train,val}.txt`: one id a line (1464 train, 1449 val).

Splits: 'train' reads train.txt and 'val' val.txt; 'test' is val.txt again, since VOC
publishes no test annotations.

Padding convention: VOC images differ in size, but a batch must have one shape (and the
jitted evaluation step one compiled shape), so every example comes back padded at the bottom
and right to [P, P] (P = `config.data.pad_size`, default 512): the image with 0, the label
with 255, which the loss and the metric ignore, so padding never counts. `height` and
`width` hold each example's true size. Batch keys of `VocSegmentationSource.get`:

- `image`: [n, P, P, 3] uint8,
- `label`: [n, P, P] int32, 0..20 and 255 (ignore; class values 21..254 never occur in VOC
  and would be mapped to 255),
- `height`, `width`: [n] int32.

Training augmentation (`voc_train_augment`), as the handout's train transform, per example
of a padded batch: take the true region (`height` x `width`), resize it so that its shorter
side is a random integer in [256, 300] (image bilinear, label nearest), random-crop 256x256
(padding first with 0 / 255 where the resized image is smaller than the crop, as torchvision's
RandomCrop(pad_if_needed=True)), and flip left-right with probability 0.5, image and label
together. The output batch is [n, 256, 256] with `height` = `width` = 256.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence

import ml_collections
import numpy as np
from PIL import Image

from dllab_jax.data.base import SourceInfo, int_key, load_image
from dllab_jax.data.registry import register
from dllab_jax.data.segmentation import IGNORE, _check_split
from dllab_jax.errors import UserError

Augment = Callable[[dict[str, np.ndarray], np.random.Generator], dict[str, np.ndarray]]

VOC_CLASS_NAMES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_NUM_CLASSES = len(VOC_CLASS_NAMES)
# VOC has no public test annotations, so 'test' reads the val list, as the course does.
VOC_SPLIT_LISTS = {"train": "train", "val": "val", "test": "val"}
DEFAULT_PAD_SIZE = 512  # VOC images are at most 500x500

# PNG value -> label: the class ids stay, everything else (255, and 21..254 which VOC never
# uses) is ignored.
_LABEL_LUT = np.full(256, IGNORE, np.int32)
_LABEL_LUT[:VOC_NUM_CLASSES] = np.arange(VOC_NUM_CLASSES)

_LAYOUT_HINT = (
    "config.data.root must be the VOCdevkit/VOC2012 folder (JPEGImages/, SegmentationClass/, "
    "ImageSets/Segmentation/)"
)


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """The VOC colour map: [num_colors, 3] uint8, colour k for class k (255 is the border).

    The devkit's bit-interleaving rule (bits of the class id spread over R, G, B from the
    most significant bit down), so the PNGs this writes look like the published ones.
    """
    palette = np.zeros((num_colors, 3), np.uint8)
    for k in range(num_colors):
        c, r, g, b = k, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[k] = (r, g, b)
    return palette


# --------------------------------------------------------------------------------------------
# Reading.


def read_voc_label(path: str) -> np.ndarray:
    """A SegmentationClass PNG as [h, w] int32 class ids, 255 = ignore.

    The palette image is read as its indices (no RGB conversion): they are the class ids.
    Greyscale ('L') PNGs of the same values (some redistributions) read the same way.
    """
    with load_image(path) as png:
        if png.mode not in ("P", "L"):
            raise UserError(
                f"{path} is a {png.mode!r} PNG; VOC labels must be palette ('P') or greyscale "
                "PNGs whose pixel values are the class ids (SegmentationClass/, not an RGB "
                "rendering)"
            )
        values = np.asarray(png, dtype=np.uint8)
    return _LABEL_LUT[values]


def read_voc_image(path: str) -> np.ndarray:
    """A JPEGImages file as [h, w, 3] uint8 at its own size (greyscale/CMYK -> RGB)."""
    with load_image(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def read_voc_ids(list_file: str) -> list[str]:
    """The ids of an ImageSets/Segmentation list, one a line (blank lines skipped)."""
    with open(list_file, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


class VocSegmentationSource:
    """One VOC 2012 segmentation split: ids in memory, pixels read and padded by `get`.

    Attributes:
      root: the VOCdevkit/VOC2012 folder.
      ids: the image ids of the split, in list order.
      pad_size: P, the side every example is padded to.
      info: `SourceInfo` with the 21 classes and `image_shape` (P, P, 3).
    """

    def __init__(self, root: str, ids: Sequence[str], pad_size: int):
        self.root = root
        self.ids = list(ids)
        self.pad_size = pad_size
        self.info = SourceInfo(
            num_classes=VOC_NUM_CLASSES,
            class_names=VOC_CLASS_NAMES,
            image_shape=(pad_size, pad_size, 3),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, index: int) -> str:
        return os.path.join(self.root, "JPEGImages", f"{self.ids[index]}.jpg")

    def label_path(self, index: int) -> str:
        return os.path.join(self.root, "SegmentationClass", f"{self.ids[index]}.png")

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Example `index` unpadded: image [h, w, 3] uint8 and label [h, w] int32."""
        image_path, label_path = self.image_path(index), self.label_path(index)
        for path in (image_path, label_path):
            # Checked at construction too; this catches files removed since.
            if not os.path.isfile(path):
                raise UserError(f"file {path} does not exist; {_LAYOUT_HINT}")
        image = read_voc_image(image_path)
        label = read_voc_label(label_path)
        if image.shape[:2] != label.shape:
            raise UserError(
                f"{label_path} is {label.shape[0]}x{label.shape[1]} pixels but its image "
                f"{image_path} is {image.shape[0]}x{image.shape[1]}; the label must match it"
            )
        h, w = label.shape
        if max(h, w) > self.pad_size:
            raise UserError(
                f"{image_path} is {h}x{w} pixels, larger than config.data.pad_size="
                f"{self.pad_size}; raise config.data.pad_size to at least {max(h, w)}"
            )
        return image, label

    def get(self, indices: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """Reads `indices`, padded to [P, P] at the bottom and right.

        Returns:
          {'image': [n, P, P, 3] uint8 (0 outside the image), 'label': [n, P, P] int32 (255
          outside), 'height': [n] int32, 'width': [n] int32}.
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        n, p = len(indices), self.pad_size
        images = np.zeros((n, p, p, 3), np.uint8)
        labels = np.full((n, p, p), IGNORE, np.int32)
        heights = np.empty(n, np.int32)
        widths = np.empty(n, np.int32)
        for k, index in enumerate(indices):
            image, label = self.read(int(index))
            h, w = label.shape
            images[k, :h, :w] = image
            labels[k, :h, :w] = label
            heights[k], widths[k] = h, w
        return {"image": images, "label": labels, "height": heights, "width": widths}


def _check_files(folder: str, ids: Sequence[str], extension: str, list_file: str) -> None:
    """A UserError naming the first missing `folder/<id><extension>` of `ids`."""
    if not os.path.isdir(folder):
        raise UserError(f"folder {folder} does not exist; {_LAYOUT_HINT}")
    # One directory listing instead of one stat per id.
    present = set(os.listdir(folder))
    missing = [i for i in ids if f"{i}{extension}" not in present]
    if missing:
        raise UserError(
            f"{len(missing)} of {len(ids)} ids listed in {list_file} have no file in {folder}, "
            f"first {os.path.join(folder, missing[0] + extension)}"
        )


@register("voc_segmentation")
def make_voc_segmentation(
    data_config: ml_collections.ConfigDict, split: str
) -> VocSegmentationSource:
    """PASCAL VOC 2012 semantic segmentation (21 classes, 255 = ignore), read lazily.

    Reads `root` (the VOCdevkit/VOC2012 folder) and `pad_size` (P, default 512: every
    example is padded to [P, P]; see the module docstring). Split 'train' reads the 1464 ids
    of ImageSets/Segmentation/train.txt, 'val' the 1449 of val.txt, and 'test' val.txt again:
    VOC publishes no test annotations.
    """
    _check_split("voc_segmentation", split)
    root = data_config.get("root", None)
    if not root:
        raise UserError(
            "config.data.root is not set; point it at the VOCdevkit/VOC2012 folder for "
            "'voc_segmentation'"
        )
    root = os.path.expanduser(str(root))
    if not os.path.isdir(root):
        raise UserError(f"VOC root {root} does not exist; {_LAYOUT_HINT}")
    pad_size = int_key(data_config, "pad_size", DEFAULT_PAD_SIZE, 1)
    list_file = os.path.join(root, "ImageSets", "Segmentation", f"{VOC_SPLIT_LISTS[split]}.txt")
    if not os.path.isfile(list_file):
        raise UserError(f"split list {list_file} does not exist; {_LAYOUT_HINT}")
    ids = read_voc_ids(list_file)
    if not ids:
        raise UserError(f"split list {list_file} lists no ids")
    _check_files(os.path.join(root, "JPEGImages"), ids, ".jpg", list_file)
    _check_files(os.path.join(root, "SegmentationClass"), ids, ".png", list_file)
    return VocSegmentationSource(root, ids, pad_size)


# --------------------------------------------------------------------------------------------
# The handout's training augmentation.


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

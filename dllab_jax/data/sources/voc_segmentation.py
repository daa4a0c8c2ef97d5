"""`voc_segmentation`: PASCAL VOC 2012 semantic segmentation, read lazily from the published
folder layout.

The data source of the Freiburg DL Lab 2023 exercise (segmentation heads on a frozen DINO
ViT).

Layout: `config.data.root` is the `VOCdevkit/VOC2012` folder of VOCtrainval_11-May-2012.tar
(`readers/voc.py` describes it and reads its files).

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
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import ml_collections
import numpy as np

from dllab_jax import registry
from dllab_jax.data.base import IGNORE, SourceInfo
from dllab_jax.data.checks import check_split, int_key, root_folder
from dllab_jax.data.readers.voc import (
    VOC_CLASS_NAMES,
    VOC_NUM_CLASSES,
    VOC_SPLIT_LISTS,
    read_voc_ids,
    read_voc_image,
    read_voc_label,
)
from dllab_jax.errors import UserError

DEFAULT_PAD_SIZE = 512  # VOC images are at most 500x500

_LAYOUT_HINT = (
    "config.data.root must be the VOCdevkit/VOC2012 folder (JPEGImages/, SegmentationClass/, "
    "ImageSets/Segmentation/)"
)


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


@registry.data_sources.register("voc_segmentation")
def make_voc_segmentation(
    data_config: ml_collections.ConfigDict, split: str
) -> VocSegmentationSource:
    """PASCAL VOC 2012 semantic segmentation (21 classes, 255 = ignore), read lazily.

    Reads `root` (the VOCdevkit/VOC2012 folder) and `pad_size` (P, default 512: every
    example is padded to [P, P]; see the module docstring). Split 'train' reads the 1464 ids
    of ImageSets/Segmentation/train.txt, 'val' the 1449 of val.txt, and 'test' val.txt again:
    VOC publishes no test annotations.
    """
    check_split("voc_segmentation", split)
    root = root_folder(
        data_config, "the VOCdevkit/VOC2012 folder for 'voc_segmentation'", "VOC", _LAYOUT_HINT
    )
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

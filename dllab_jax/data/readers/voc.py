"""The PASCAL VOC 2012 folder layout (`VOCdevkit/VOC2012`), shared by `voc_segmentation` and
`voc_captions`: the split lists, the images and the palette label PNGs.

- `JPEGImages/<id>.jpg`: the images, at most 500x500 pixels.
- `SegmentationClass/<id>.png`: palette ('P' mode) PNGs whose pixel values *are* the class
  ids, 0 background and 1..20 the classes of `VOC_CLASS_NAMES`, with 255 on the unlabelled
  object borders. They are read without converting to RGB, so the palette colours never
  matter.
- `ImageSets/Segmentation/{train,val}.txt`: one id a line (1464 train, 1449 val).
"""

from __future__ import annotations

import numpy as np

from dllab_jax.data.base import IGNORE
from dllab_jax.data.readers.images import load_image
from dllab_jax.errors import UserError

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

# PNG value -> label: the class ids stay, everything else (255, and 21..254 which VOC never
# uses) is ignored.
_LABEL_LUT = np.full(256, IGNORE, np.int32)
_LABEL_LUT[:VOC_NUM_CLASSES] = np.arange(VOC_NUM_CLASSES)


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
    """The ids of an ImageSets/Segmentation list (or any list file), one a line, blank lines
    skipped."""
    with open(list_file, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]

"""`carla`: the CARLA segmentation folders `root/<any>/CameraRGB/*.png` + `CameraSeg/*.png`,
read lazily (13 classes, the class id in the mask's red channel)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import ml_collections
import numpy as np
from PIL import Image

from dllab_jax import registry
from dllab_jax.data.base import IGNORE, SourceInfo
from dllab_jax.data.checks import check_split, holdout_range, image_size_key, root_folder
from dllab_jax.data.readers.images import load_image, read_image
from dllab_jax.errors import UserError

CARLA_NUM_CLASSES = 13
CARLA_CLASS_NAMES = (
    "unlabeled",
    "building",
    "fence",
    "other",
    "pedestrian",
    "pole",
    "road line",
    "road",
    "sidewalk",
    "vegetation",
    "car",
    "wall",
    "traffic sign",
)


def carla_pairs(root: str) -> list[tuple[str, str]]:
    """(rgb, mask) paths under root/<any>/CameraRGB|CameraSeg (or root/CameraRGB|CameraSeg),
    sorted by file name, then folder. Masks without an image (and vice versa) are skipped.
    """
    subfolders = sorted(
        e.path for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")
    )
    folders = [root, *subfolders]
    pairs = []
    for folder in folders:
        rgb_dir = os.path.join(folder, "CameraRGB")
        seg_dir = os.path.join(folder, "CameraSeg")
        if not (os.path.isdir(rgb_dir) and os.path.isdir(seg_dir)):
            continue
        for e in os.scandir(rgb_dir):
            if e.is_file() and e.name.lower().endswith(".png"):
                mask = os.path.join(seg_dir, e.name)
                if os.path.isfile(mask):
                    pairs.append((e.name, folder, e.path, mask))
    pairs.sort()
    return [(rgb, mask) for _, _, rgb, mask in pairs]


def read_carla_pair(
    rgb_path: str, mask_path: str, image_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """A CameraRGB / CameraSeg pair as ([H, W, 3] uint8, [H, W] int32).

    The image is resized bilinearly, the mask's red channel (the class id) nearest; ids >= 13
    become 255. A mask of another size than its image is an error, not resized to fit: the
    two would no longer describe the same pixels.
    """
    h, w = image_size
    with load_image(mask_path) as mask, load_image(rgb_path) as rgb:
        if mask.size != rgb.size:
            raise UserError(
                f"{mask_path} is {mask.size[1]}x{mask.size[0]} pixels but its image {rgb_path} "
                f"is {rgb.size[1]}x{rgb.size[0]}; a CameraSeg mask must match its CameraRGB image"
            )
        red = mask.convert("RGB").getchannel("R")
    if red.size != (w, h):
        red = red.resize((w, h), Image.Resampling.NEAREST)
    ids = np.asarray(red, dtype=np.int32)
    labels = np.where(ids < CARLA_NUM_CLASSES, ids, IGNORE).astype(np.int32)
    return read_image(rgb_path, image_size), labels


class CarlaSource:
    """One CARLA split: file pairs in memory, pixels read by `get`."""

    def __init__(self, pairs: Sequence[tuple[str, str]], info: SourceInfo):
        self.pairs = list(pairs)
        self.info = info

    def __len__(self) -> int:
        return len(self.pairs)

    def get(self, indices: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        h, w, _ = self.info.image_shape
        images = np.empty((len(indices), h, w, 3), np.uint8)
        labels = np.empty((len(indices), h, w), np.int32)
        for i, index in enumerate(indices):
            images[i], labels[i] = read_carla_pair(*self.pairs[index], (h, w))
        return {"image": images, "label": labels}


@registry.data_sources.register("carla")
def make_carla(data_config: ml_collections.ConfigDict, split: str) -> CarlaSource:
    """The CARLA segmentation folders, split by sorted file name.

    Reads `root` (holding data*/CameraRGB and data*/CameraSeg), `image_size` ((320, 416) =
    (H, W); images bilinear, masks nearest) and `num_val` / `num_test` (500 / 500): after
    sorting all pairs by file name, the last num_test are 'test', the num_val before them
    'val', the rest 'train'.
    """
    check_split("carla", split)
    root = root_folder(
        data_config,
        "the CARLA folder holding data*/CameraRGB/*.png and data*/CameraSeg/*.png",
        "CARLA",
    )
    pairs = carla_pairs(root)
    if not pairs:
        raise UserError(
            f"CARLA root {root} has no image/mask pairs; expected {root}/<any>/CameraRGB/*.png "
            "with masks of the same names in CameraSeg/"
        )
    size = image_size_key(data_config, (320, 416))
    start, stop = holdout_range(
        data_config,
        split,
        len(pairs),
        500,
        lambda num_val, num_test: (
            f"CARLA root {root} has {len(pairs)} pairs, not enough for num_val={num_val} and "
            f"num_test={num_test} plus training data; lower config.data.num_val/num_test"
        ),
    )
    info = SourceInfo(
        num_classes=CARLA_NUM_CLASSES, class_names=CARLA_CLASS_NAMES, image_shape=(*size, 3)
    )
    return CarlaSource(pairs[start:stop], info)

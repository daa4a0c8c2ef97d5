"""Images in the ImageFolder layout, read lazily from disk.

Layout: `root/{train,valid,test}/<class>/*.{png,jpg,jpeg}` (the Ljubljana birds set). The
split 'val' reads `valid/`, or `val/` when there is no `valid/`. Class names are the sorted
sub-folders of `train/`, and every split uses that list, so labels agree across splits.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import ml_collections
import numpy as np

from dllab_jax import registry
from dllab_jax.data.base import SourceInfo
from dllab_jax.data.checks import check_split, image_size_key, root_folder
from dllab_jax.data.readers.images import read_images
from dllab_jax.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
# Folder names tried for each split, in order.
SPLIT_FOLDERS = {"train": ("train",), "val": ("valid", "val"), "test": ("test",)}


def _class_folders(split_dir: str) -> list[str]:
    return sorted(
        e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith(".")
    )


def _image_files(class_dir: str) -> list[str]:
    return sorted(
        e.path
        for e in os.scandir(class_dir)
        if e.is_file()
        and not e.name.startswith(".")
        and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
    )


def _split_dir(root: str, split: str) -> str:
    check_split("folder", split, tuple(SPLIT_FOLDERS))
    candidates = [os.path.join(root, name) for name in SPLIT_FOLDERS[split]]
    for path in candidates:
        if os.path.isdir(path):
            return path
    raise UserError(
        f"split {split!r} has no folder: looked for {' and '.join(candidates)}; "
        "the layout is root/{train,valid,test}/<class>/<image>"
    )


class FolderSource:
    """A split of an image folder: file names and labels in memory, pixels read by `get`.

    Attributes:
      paths: the image files, sorted by class folder, then file name.
      labels: [n] int32 class ids into `info.class_names`.
      info: `SourceInfo` with the train folder's classes.
    """

    def __init__(self, paths: Sequence[str], labels: np.ndarray, info: SourceInfo):
        self.paths = list(paths)
        self.labels = np.asarray(labels, np.int32)
        self.info = info

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, indices: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """Reads the images of `indices`: {'image': [n, H, W, 3] uint8, 'label': [n] int32}."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        images = read_images([self.paths[i] for i in indices], self.info.image_shape[:2])
        return {"image": images, "label": self.labels[indices]}


@registry.data_sources.register("folder")
def make_folder(data_config: ml_collections.ConfigDict, split: str) -> FolderSource:
    """The ImageFolder source for `split` ('train', 'val' or 'test').

    Reads `data_config.root` (the folder holding train/, valid/, test/) and
    `data_config.image_size` (int or (H, W), default 224).
    """
    root = root_folder(data_config, "the folder holding train/, valid/, test/", "image folder")
    image_size = image_size_key(data_config, 224)

    train_dir = _split_dir(root, "train")
    class_names = tuple(_class_folders(train_dir))
    if not class_names:
        raise UserError(f"{train_dir} has no class folders; expected {train_dir}/<class>/<image>")
    split_dir = _split_dir(root, split)
    unknown = sorted(set(_class_folders(split_dir)) - set(class_names))
    if unknown:
        raise UserError(
            f"{split_dir} has class folders not in {train_dir}: {unknown[:5]}; every class "
            "must have a train folder"
        )

    paths, labels = [], []
    for label, name in enumerate(class_names):
        class_dir = os.path.join(split_dir, name)
        if os.path.isdir(class_dir):
            files = _image_files(class_dir)
            paths += files
            labels += [label] * len(files)
    if not paths:
        raise UserError(
            f"{split_dir} has no images ({', '.join(IMAGE_EXTENSIONS)}) in class folders; "
            f"expected {split_dir}/<class>/<image>"
        )
    info = SourceInfo(
        num_classes=len(class_names), class_names=class_names, image_shape=(*image_size, 3)
    )
    return FolderSource(paths, np.array(labels, np.int32), info)

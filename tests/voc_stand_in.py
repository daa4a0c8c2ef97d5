"""Tiny PASCAL VOC 2012 folders in the published layout, for tests: with a captions JSON
(`write_tiny_voc`, the caption tasks) or with segmentation labels (`write_voc`, the VOC
segmentation source, its augmentation and the segmentation-heads task)."""

import json
from collections.abc import Callable

import numpy as np
from PIL import Image

from dllab_jax.data.readers import voc as readers_voc


def write_tiny_voc(tmp_path, split_ids: dict[str, list[str]], caption_of: Callable):
    """Writes `VOCdevkit/VOC2012` (random 20x24 JPEGs, ImageSets/Segmentation lists) and
    `captions.json` ({id: caption_of(position in split, id)}); returns (root, json path)."""
    root = tmp_path / "VOCdevkit" / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    rng = np.random.default_rng(0)
    captions = {}
    for split, names in split_ids.items():
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names))
        for i, name in enumerate(names):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), np.uint8)).save(
                root / "JPEGImages" / f"{name}.jpg"
            )
            captions[name] = caption_of(i, name)
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    return root, tmp_path / "captions.json"


# id -> (height, width, classes of the left, top-right and bottom-right blocks).
EXAMPLES = {
    "2007_000032": (40, 56, (15, 1, 0)),
    "2007_000039": (64, 48, (12, 0, 20)),
    "2008_000001": (32, 32, (7, 3, 0)),
    "2007_000033": (48, 40, (0, 9, 19)),
    "2009_000002": (24, 60, (2, 0, 11)),
}


SPLITS = {
    "train": ["2007_000032", "2007_000039", "2008_000001"],
    "val": ["2007_000033", "2009_000002"],
}


def block_label(h: int, w: int, classes: tuple[int, int, int]) -> np.ndarray:
    """[h, w] uint8: three class blocks (left, top-right, bottom-right), 255 borders between
    them (2 pixels wide) and a 255 frame on the outer edge, as VOC draws object outlines."""
    left, top_right, bottom_right = classes
    label = np.full((h, w), bottom_right, np.uint8)
    label[: h // 2, w // 2 :] = top_right
    label[:, : w // 2] = left
    label[:, w // 2 - 1 : w // 2 + 1] = 255
    label[h // 2 - 1 : h // 2 + 1, w // 2 :] = 255
    label[[0, -1], :] = 255
    label[:, [0, -1]] = 255
    return label


def save_palette_png(label: np.ndarray, path) -> None:
    png = Image.fromarray(label, mode="P")
    png.putpalette(readers_voc.voc_palette().reshape(-1).tolist())
    png.save(path)


def write_voc(tmp_path, examples=EXAMPLES, splits=SPLITS):
    """Writes VOCdevkit/VOC2012 under tmp_path; returns (root, {id: label [h, w] uint8})."""
    root = tmp_path / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = {}
    for name, (h, w, classes) in examples.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(
            root / "JPEGImages" / f"{name}.jpg"
        )
        labels[name] = block_label(h, w, classes)
        save_palette_png(labels[name], root / "SegmentationClass" / f"{name}.png")
    for split, names in splits.items():
        # Trailing newline and a blank line, as hand-edited lists have.
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n\n")
    return root, labels

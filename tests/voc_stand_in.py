"""A tiny PASCAL VOC 2012 folder with a captions JSON, in the published layout, for tests."""

import json
from collections.abc import Callable

import numpy as np
from PIL import Image


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

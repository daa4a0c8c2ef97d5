"""Captioned image files (PASCAL VOC with a captions JSON, Flickr8k): reading the caption
files and serving the images lazily.

`CaptionFileSource` holds names and captions in memory and reads pixels on `get`; the
`voc_captions` and `flickr8k` sources build one from their layouts.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence

import ml_collections
import numpy as np

from dllab_jax.data.base import SourceInfo, caption_texts
from dllab_jax.data.checks import int_key, require_file
from dllab_jax.data.readers.images import read_images
from dllab_jax.errors import UserError


class CaptionFileSource:
    """Image files with captions: names and captions in memory, pixels read and resized by `get`.

    Attributes:
      ids: one name per image (VOC id, Flickr file name).
      paths: the image files.
      captions: [n, K] object array of str, '' where an image has fewer than K captions.
      info: `SourceInfo` with `image_shape` (H, W, 3) and no classes.
    """

    def __init__(
        self,
        ids: Sequence[str],
        paths: Sequence[str],
        captions: np.ndarray,
        image_size: tuple[int, int],
    ):
        self.ids = list(ids)
        self.paths = list(paths)
        self.captions = captions
        self.info = SourceInfo(0, (), (*image_size, 3))

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, indices: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """Reads `indices`: {'image': [n, H, W, 3] uint8, 'captions': [n, K] object}."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        images = read_images([self.paths[i] for i in indices], self.info.image_shape[:2])
        return {"image": images, "captions": self.captions[indices]}

    def text_corpus(self) -> list[str]:
        """Every caption of the split in image order, repeats kept (word frequencies)."""
        return caption_texts(self.captions)


def captions_array(captions: Sequence[Sequence[str]], num_captions: int) -> np.ndarray:
    """[n, num_captions] object array of str, '' where an example has fewer captions."""
    array = np.full((len(captions), num_captions), "", dtype=object)
    for i, caps in enumerate(captions):
        caps = list(caps)[:num_captions]
        array[i, : len(caps)] = caps
    return array


def captioned_subset(
    names: Sequence[str],
    captions: dict[str, list[str]],
    data_config: ml_collections.ConfigDict,
    listed_in: str,
    captions_from: str,
) -> list[str]:
    """`names` that have captions; a UserError for the others unless skip_uncaptioned."""
    missing = [n for n in names if not captions.get(n)]
    if missing and not data_config.get("skip_uncaptioned", False):
        raise UserError(
            f"{len(missing)} of {len(names)} images listed in {listed_in} have no caption in "
            f"{captions_from} (first: {', '.join(missing[:5])}); add captions or set "
            "config.data.skip_uncaptioned=True"
        )
    kept = [n for n in names if captions.get(n)]
    if not kept:
        raise UserError(f"no image listed in {listed_in} has a caption in {captions_from}")
    return kept


def check_images_exist(image_dir: str, files: Sequence[str]) -> None:
    present = set(os.listdir(image_dir))
    missing = [f for f in files if f not in present]
    if missing:
        raise UserError(
            f"{len(missing)} image files are missing, first {os.path.join(image_dir, missing[0])}"
        )


def num_captions(data_config: ml_collections.ConfigDict, captions: Sequence[Sequence[str]]) -> int:
    """K: config.data.captions_per_image if set (extra captions are dropped), else the most
    any image of the split has."""
    value = data_config.get("captions_per_image", None)
    if value is None:
        return max(len(c) for c in captions)
    return int_key(data_config, "captions_per_image", 5, 1)


def read_caption_json(path: str) -> dict[str, list[str]]:
    """A JSON object image id -> caption or list of captions, as id -> non-empty captions.

    Ids may carry the '.jpg' extension; it is dropped so they match VOC's id lists.
    """
    require_file(path, "set config.data.captions_json to the captions JSON file")
    try:
        with open(path, encoding="utf-8") as f:
            mapping = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(mapping, dict):
        raise UserError(f"{path} must hold a JSON object image id -> caption(s)")
    captions = {}
    for key, value in mapping.items():
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise UserError(
                f"{path}: the captions of {key!r} must be a string or a list of strings, "
                f"got {value!r}"
            )
        image_id = key.strip()
        if image_id.lower().endswith(".jpg"):
            image_id = image_id[:-4]
        captions.setdefault(image_id, []).extend(v.strip() for v in values if v.strip())
    return captions


def read_flickr_captions(path: str) -> dict[str, list[str]]:
    """`captions.txt` (CSV, header 'image,caption') as image file name -> captions, in file
    order. An unquoted caption with commas spreads over several fields; they are rejoined."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["image", "caption"]:
        raise UserError(f"{path} must be a CSV file with the header 'image,caption'")
    captions: dict[str, list[str]] = {}
    for row in rows[1:]:
        if not row or not row[0].strip():
            continue
        caption = ",".join(row[1:]).strip()
        entry = captions.setdefault(row[0].strip(), [])
        if caption:
            entry.append(caption)
    return captions


def caption_file_source(
    data_config: ml_collections.ConfigDict,
    image_dir: str,
    ids: Sequence[str],
    files: Sequence[str],
    captions_by_id: dict[str, list[str]],
    image_size: tuple[int, int],
) -> CaptionFileSource:
    """The source of `ids`, whose images are `image_dir/<files[i]>` (checked to exist), with
    `config.data.captions_per_image` captions each (default: the most any of them has)."""
    check_images_exist(image_dir, files)
    captions = [captions_by_id[i] for i in ids]
    array = captions_array(captions, num_captions(data_config, captions))
    paths = [os.path.join(image_dir, f) for f in files]
    return CaptionFileSource(ids, paths, array, image_size)

"""`concepts_folder`: the concept set in its original file layout, and the exporter to it.

`concepts_folder` reads the original file layout: a folder of `CLEVR_<abc>_<id>.png` (abc the
code, id an integer, zero-padded or not), each with `CLEVR_<abc>_<id>.json` beside it. Keys:

- `root` (required): the folder. If it has subfolders `train/`, `val/` (or `valid/`) or
  `test/`, a split reads its own subfolder, and the code keys filter only when set
  explicitly. Otherwise every split reads all files in `root`, filtered by the same code keys
  and defaults as `concepts` (so train and val/test overlap on the seen codes).
- `image_size` (optional): resize (bilinear) to this size; default: the first image's size
  (images of another size are resized to it).

Files are sorted by (id, code). Eager: the set is small (6400 images of 28 x 28 are ~15 MB).
The file name is the source of truth for the three bits; the JSON gives the raw values. The JSON
schema written by `export_concepts_folder` and read (leniently) here::

    {
      "code": "011",                # informational; the file name wins
      "shape": "circle",            # "circle" | "triangle"; informational
      "color": [0.1, 0.1, 0.9],     # RGB in [0, 1]; also read as "colour" or "rgb", and
                                    # divided by 255 when any channel exceeds 1
      "size": 5.5,                  # bounding-box half side in pixels of "image_size"
                                    # (also read as "radius")
      "center": [14.0, 14.0],       # (x, y) in pixels from the top-left, y down (also read
                                    # as "centre"); optional: estimated from the image
      "image_size": 28              # int or [H, W]; optional: the PNG's size
    }
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence

import ml_collections
import numpy as np
from PIL import Image

from dllab_jax import registry
from dllab_jax.data.base import ArraySource, Source
from dllab_jax.data.checks import check_split, image_size_key, root_folder
from dllab_jax.data.procedural.concept_codes import (
    ALL_CODES,
    SHAPE_NAMES,
    code_bits,
    code_index,
    concept_arrays,
    concept_info,
    split_codes,
)
from dllab_jax.data.readers.images import load_image, read_image
from dllab_jax.errors import UserError

FILE_PATTERN = re.compile(r"^CLEVR_([01]{3})_(\d+)\.png$", re.IGNORECASE)
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid"), "test": ("test",)}
_NAME_HELP = "expected CLEVR_<abc>_<id>.png (abc = shape, colour, size bits; id an integer)"


def _json_value(record: Mapping, keys: Sequence[str], json_path: str, required: bool = True):
    for key in keys:
        if key in record:
            return record[key]
    if required:
        raise UserError(f"{json_path} has no {' / '.join(repr(k) for k in keys)} entry")
    return None


def _floats(value, count: int, what: str, json_path: str) -> np.ndarray:
    try:
        array = np.asarray(value, np.float64).reshape(-1)
    except (TypeError, ValueError):
        array = np.zeros(0)
    if array.shape != (count,) or not np.all(np.isfinite(array)):
        raise UserError(f"{json_path}: {what} must be {count} finite number(s), got {value!r}")
    return array


def _estimate_center(image: np.ndarray) -> np.ndarray:
    """(x, y) pixel centre of the bounding box of the object (pixels brighter than 40%)."""
    ys, xs = np.nonzero(image.max(axis=-1) > 0.4 * 255)
    if len(xs) == 0:
        return np.array([image.shape[1] / 2.0, image.shape[0] / 2.0])
    return np.array([(xs.min() + xs.max() + 1) / 2.0, (ys.min() + ys.max() + 1) / 2.0])


def read_concept_json(json_path: str, image: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """The raw values of one JSON file (schema: module docstring), normalised.

    Args:
      json_path: the file.
      image: the example's [h, w, 3] uint8 image as stored (before any resize): gives the
        default `image_size` and the centre when the JSON has none.

    Returns:
      colour [3] in [0, 1], normalised size, centre [2] as (x / W, y / H).
    """
    try:
        with open(json_path) as f:
            record = json.load(f)
    except json.JSONDecodeError as error:
        raise UserError(f"{json_path} is not valid JSON: {error}") from None
    if not isinstance(record, dict):
        raise UserError(
            f"{json_path} must hold a JSON object (schema: sources/concepts_folder.py docstring)"
        )
    colour = _json_value(record, ("color", "colour", "rgb"), json_path)
    colour = _floats(colour, 3, "color", json_path)
    if colour.max() > 1.0:  # written as 0..255
        colour = colour / 255.0
    size_px = _floats(_json_value(record, ("size", "radius"), json_path), 1, "size", json_path)[0]
    stored = record.get("image_size", None)
    if stored is None:
        h, w = image.shape[:2]
    else:
        h, w = _floats(stored if np.ndim(stored) else [stored] * 2, 2, "image_size", json_path)
    center = _json_value(record, ("center", "centre"), json_path, required=False)
    if center is None:
        # The estimate is in the pixels of the stored image, whatever the JSON says.
        center = _estimate_center(image) / np.array([image.shape[1], image.shape[0]])
    else:
        center = _floats(center, 2, "center", json_path) / np.array([w, h])
    return colour, float(size_px / (min(h, w) / 2.0)), center


def _concept_files(folder: str) -> list[tuple[int, str, str]]:
    """(id, code, png path) of every PNG in `folder`, sorted by (id, code); UserError on a bad
    file name."""
    files = []
    for entry in os.scandir(folder):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        if not entry.name.lower().endswith(".png"):
            continue  # the JSONs and anything else
        match = FILE_PATTERN.match(entry.name)
        if match is None:
            raise UserError(f"malformed file name {entry.path}; {_NAME_HELP}")
        files.append((int(match.group(2)), match.group(1), entry.path))
    return sorted(files)


def _split_folder(root: str, split: str) -> str | None:
    """The split's subfolder, None for the flat layout (no split subfolders at all)."""
    names = [n for names in SPLIT_FOLDERS.values() for n in names]
    if not any(os.path.isdir(os.path.join(root, n)) for n in names):
        return None
    for name in SPLIT_FOLDERS[split]:
        path = os.path.join(root, name)
        if os.path.isdir(path):
            return path
    tried = " or ".join(os.path.join(root, n) for n in SPLIT_FOLDERS[split])
    raise UserError(f"split {split!r} has no folder: {root} has split subfolders but not {tried}")


def load_concepts_folder(
    folder: str, codes: Sequence[str] | None, image_size: tuple[int, int] | None = None
) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
    """Reads every CLEVR_<abc>_<id>.png (+ .json) in `folder` whose code is in `codes`.

    Args:
      folder: the folder.
      codes: the codes to keep; None keeps all.
      image_size: (H, W) to resize to; None: the first image's size.

    Returns:
      The arrays (see the module docstring) and (H, W).
    """
    files = _concept_files(folder)
    if not files:
        raise UserError(f"{folder} has no image files; {_NAME_HELP}, each with a .json beside it")
    if codes is not None:
        files = [f for f in files if f[1] in codes]
        if not files:
            raise UserError(f"{folder} has no images with codes {list(codes)}")
    images, code_ints, colours, sizes, centers = [], [], [], [], []
    for _, code, path in files:
        json_path = os.path.splitext(path)[0] + ".json"
        if not os.path.isfile(json_path):
            raise UserError(f"{path} has no JSON beside it: expected {json_path}")
        with load_image(path) as pil:
            stored = np.asarray(pil.convert("RGB"), dtype=np.uint8)
        if image_size is None:
            image_size = stored.shape[:2]
        colour, size, center = read_concept_json(json_path, stored)
        images.append(read_image(path, image_size) if stored.shape[:2] != image_size else stored)
        code_ints.append(code_index(code))
        colours.append(colour)
        sizes.append(size)
        centers.append(center)
    arrays = concept_arrays(
        np.stack(images), np.array(code_ints), np.array(colours), np.array(sizes), np.array(centers)
    )
    return arrays, (int(image_size[0]), int(image_size[1]))


@registry.data_sources.register("concepts_folder")
def make_concepts_folder(data_config: ml_collections.ConfigDict, split: str) -> ArraySource:
    """The concept set from `CLEVR_<abc>_<id>.png` + `.json` files, read eagerly.

    Reads `root`, `image_size` (optional) and `codes` / `train_codes` / `eval_codes` (see the
    module docstring for the layouts and how the code keys filter each).
    """
    check_split("concepts_folder", split)
    root = root_folder(
        data_config,
        "the folder of CLEVR_<abc>_<id>.png files (or with train/, val/, test/ subfolders of them)",
        "concept folder",
    )
    image_size = image_size_key(data_config, 0) if data_config.get("image_size", None) else None
    folder = _split_folder(root, split)
    if folder is None:
        folder, codes = root, split_codes(data_config, split)
    else:
        codes = split_codes(data_config, split, explicit_only=True)
    arrays, size = load_concepts_folder(folder, codes, image_size)
    return ArraySource(arrays, concept_info(size))


def export_concepts_folder(
    source_or_arrays: Source | Mapping[str, np.ndarray], out_dir: str
) -> list[str]:
    """Writes a split in the file layout: CLEVR_<abc>_<index:06d>.png + .json per example.

    Args:
      source_or_arrays: a concept source (all of it is written) or its arrays (at least
        `image`, `code`, `colour`, `size`; `center` optional).
      out_dir: the folder, created if missing. Example i gets id i, so the folder reads back
        in the same order.

    Returns:
      The PNG paths written.
    """
    if isinstance(source_or_arrays, Mapping):
        arrays = source_or_arrays
    else:
        arrays = source_or_arrays.get(np.arange(len(source_or_arrays)))
    os.makedirs(out_dir, exist_ok=True)
    images = np.asarray(arrays["image"], np.uint8)
    h, w = images.shape[1:3]
    half = min(h, w) / 2.0
    paths = []
    for i, image in enumerate(images):
        code = ALL_CODES[int(arrays["code"][i])]
        stem = os.path.join(out_dir, f"CLEVR_{code}_{i:06d}")
        Image.fromarray(image).save(stem + ".png")
        record = {
            "code": code,
            "shape": SHAPE_NAMES[code_bits(code)[0]],
            "color": [float(c) for c in arrays["colour"][i]],
            "size": float(arrays["size"][i]) * half,
        }
        if "center" in arrays:
            cx, cy = (float(v) for v in arrays["center"][i])
            record["center"] = [cx * w, cy * h]
        record["image_size"] = int(h) if h == w else [int(h), int(w)]
        with open(stem + ".json", "w") as f:
            json.dump(record, f)
        paths.append(stem + ".png")
    return paths

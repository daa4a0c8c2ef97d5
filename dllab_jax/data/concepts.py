"""The concept data set of the diffusion exercise (Okawa et al. 2023, "Compositional abilities
emerge multiplicatively"): one coloured shape on black, described by three binary concepts.

Concepts and codes
------------------
Every image holds one filled object on a black background, with three binary concepts:

- shape: 0 circle, 1 triangle (upright: apex up, flat base down);
- colour: 0 red (0.9, 0.1, 0.1), 1 blue (0.1, 0.1, 0.9);
- size: 0 large, 1 small.

A *code* is the 3-bit string 'abc' = shape, colour, size bits ('011' = circle, blue, small),
and its integer is int(code, 2) = shape * 4 + colour * 2 + size. Training sees
`SEEN_CODES` = 000, 001, 100, 010 (the origin and its three one-concept neighbours); the other
four, `UNSEEN_CODES` = 011, 110, 101, 111, test compositional generalisation.

Distributions (module constants; pixel values are at the reference size `REFERENCE_SIZE` = 28
and scale with min(H, W) / 28 at other image sizes). All jitters are uniform and independent:

- colour: the nominal RGB of the colour bit + U(-COLOUR_JITTER, COLOUR_JITTER) per channel
  (0.03), clipped to [0, 1];
- size: LARGE_SIZE (9.5 px) or SMALL_SIZE (5.5 px) + U(-SIZE_JITTER, SIZE_JITTER) (0.5 px).
  `size` is the half side of the object's axis-aligned bounding box, for both shapes: a circle
  of radius `size`, or a triangle with apex (cx, cy - size) and base from (cx - size, cy + size)
  to (cx + size, cy + size) (base = height = 2 * size: "equilateral-ish", and it fills exactly
  half of its bounding box where a circle fills pi / 4);
- centre: the image centre (W / 2, H / 2) + U(-CENTER_JITTER, CENTER_JITTER) per axis (2 px),
  so the largest object (10 px) stays at least 2 px inside the 28 px image.

Rendering is anti-aliased by supersampling (`supersample` x `supersample` point samples per
pixel, 4 by default): a pixel is coverage * colour, so the background is exactly 0 and fully
covered pixels hold exactly the object's colour.

Example i of a split is a pure function of (seed, split, i, its code) (`concept_example`), so
it never depends on the split's size.

Sources
-------
`concepts` (procedural, offline). Config keys (`config.data.*`):

- `seed` (0); `image_size` (28: an int or (H, W)); `supersample` (4);
- `num_train` / `num_val` / `num_test` (5000 / 800 / 800): examples in the split, over all of
  its codes;
- `codes`: a tuple of code strings (or one string '000,011,...') used by every split;
- `train_codes` (split 'train') and `eval_codes` (splits 'val' and 'test'): per-split
  overrides that win over `codes`. Defaults: `SEEN_CODES` for train, `ALL_CODES` for val/test.

Codes are assigned round-robin in the order given: example i gets codes[i % len(codes)], so
every code has the same number of examples (+-1) and a prefix of a split is balanced too.

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

Arrays (both sources, from `get`): `image` [n, H, W, 3] uint8 (the [0, 1] render * 255
rounded; `to_unit` converts back), `shape` [n] int32, `shape_onehot` [n, 2] float32, `colour`
[n, 3] float32 (raw RGB), `colour_bit` [n] int32, `size` [n] float32 (normalised: the
bounding-box half side / (min(H, W) / 2), so about 0.68 large and 0.39 small, resolution
independent and MLP friendly), `size_bit` [n] int32, `code` [n] int32 (0..7), plus `label`
[n] int32 (= `code`, so classification tasks and the pipeline work unchanged) and `center`
[n, 2] float32 (x / W, y / H). `info`: 8 classes named '000'..'111', image_shape (H, W, 3).
"""

from __future__ import annotations

import functools
import json
import os
import re
import zlib
from collections.abc import Mapping, Sequence

import ml_collections
import numpy as np
from PIL import Image

from dllab_jax.data.base import (
    ArraySource,
    Source,
    SourceInfo,
    image_size_key,
    int_key,
    load_image,
)
from dllab_jax.data.cache import cached_arrays
from dllab_jax.data.folder import read_image
from dllab_jax.data.procedural import to_uint8
from dllab_jax.data.registry import register
from dllab_jax.errors import UserError

SPLITS: tuple[str, ...] = ("train", "val", "test")

# The image side at which the pixel constants below hold; they scale with min(H, W) / 28.
REFERENCE_SIZE = 28
SHAPE_NAMES: tuple[str, ...] = ("circle", "triangle")
COLOUR_NAMES: tuple[str, ...] = ("red", "blue")
SIZE_NAMES: tuple[str, ...] = ("large", "small")
# Nominal RGB of colour bit 0 and 1.
COLOURS: tuple[tuple[float, float, float], ...] = ((0.9, 0.1, 0.1), (0.1, 0.1, 0.9))
COLOUR_JITTER = 0.03  # uniform, per channel, then clipped to [0, 1]
LARGE_SIZE = 9.5  # bounding-box half side in pixels (circle radius)
SMALL_SIZE = 5.5
SIZES: tuple[float, ...] = (LARGE_SIZE, SMALL_SIZE)  # indexed by the size bit
SIZE_JITTER = 0.5  # uniform, pixels
CENTER_JITTER = 2.0  # uniform per axis, pixels
SUPERSAMPLE = 4

ALL_CODES: tuple[str, ...] = tuple(f"{i:03b}" for i in range(8))
SEEN_CODES: tuple[str, ...] = ("000", "001", "100", "010")
UNSEEN_CODES: tuple[str, ...] = ("011", "110", "101", "111")
NUM_EXAMPLES = {"train": 5000, "val": 800, "test": 800}

# Point samples per rendering chunk: bounds the [n, H * s, W * s] temporaries to ~16 MB each.
_SAMPLES_PER_CHUNK = 2**22

# --------------------------------------------------------------------------------------------
# Codes.


def code_bits(code: str) -> tuple[int, int, int]:
    """(shape, colour, size) bits of a code string such as '011'."""
    if code not in ALL_CODES:
        raise UserError(f"invalid concept code {code!r}; valid codes are {list(ALL_CODES)}")
    return int(code[0]), int(code[1]), int(code[2])


def code_index(code: str) -> int:
    """The integer of a code: shape * 4 + colour * 2 + size (its class id)."""
    shape, colour, size = code_bits(code)
    return shape * 4 + colour * 2 + size


def describe_code(code: str) -> str:
    """'011' -> 'small blue circle'."""
    shape, colour, size = code_bits(code)
    return f"{SIZE_NAMES[size]} {COLOUR_NAMES[colour]} {SHAPE_NAMES[shape]}"


def parse_codes(value: object, key: str = "codes") -> tuple[str, ...]:
    """A config value (tuple/list of code strings, or one 'a,b' string) as unique codes.

    Args:
      value: the value of `config.data.<key>`.
      key: the key, for the error message.

    Returns:
      The codes in the given order, duplicates dropped.

    Raises:
      UserError: a code that is not three bits, or no codes at all.
    """
    if isinstance(value, str):
        value = [v for v in re.split(r"[\s,]+", value) if v]
    try:
        items = list(value)  # type: ignore[arg-type]
    except TypeError:
        items = None
    if items is None or any(not isinstance(c, str) or c not in ALL_CODES for c in items):
        bad = value if items is None else [c for c in items if c not in ALL_CODES]
        raise UserError(
            f"config.data.{key} has invalid concept codes {bad!r}; use strings of three bits "
            f"(shape, colour, size) from {list(ALL_CODES)}"
        )
    if not items:
        raise UserError(f"config.data.{key} is empty; give at least one of {list(ALL_CODES)}")
    return tuple(dict.fromkeys(items))


def split_codes(
    data_config: ml_collections.ConfigDict, split: str, explicit_only: bool = False
) -> tuple[str, ...] | None:
    """The codes of `split`: `train_codes` / `eval_codes`, else `codes`, else the default.

    Args:
      data_config: `config.data`.
      split: 'train' reads `train_codes`; every other split reads `eval_codes`.
      explicit_only: return None instead of the default (`SEEN_CODES` for train, `ALL_CODES`
        otherwise) when no key is set.
    """
    key = "train_codes" if split == "train" else "eval_codes"
    for k in (key, "codes"):
        value = data_config.get(k, None)
        if value is not None:
            return parse_codes(value, k)
    if explicit_only:
        return None
    return SEEN_CODES if split == "train" else ALL_CODES


# --------------------------------------------------------------------------------------------
# Sampling and rendering.


def _hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int | np.integer):
        return int(image_size), int(image_size)
    h, w = image_size
    return int(h), int(w)


def sample_concepts(
    rng: np.random.Generator, code: str, image_size: int | Sequence[int] = REFERENCE_SIZE
) -> dict:
    """Raw concept values of one example of `code` (see the module docstring).

    Args:
      rng: the example's generator.
      code: a code string such as '011'.
      image_size: H or (H, W); the pixel constants scale with min(H, W) / 28.

    Returns:
      {'code': str, 'shape', 'colour_bit', 'size_bit': int, 'colour': [3] float32 RGB,
      'size': float (bounding-box half side in pixels), 'center': [2] float64 (x, y) pixels}.
    """
    shape, colour_bit, size_bit = code_bits(code)
    h, w = _hw(image_size)
    scale = min(h, w) / REFERENCE_SIZE
    jitter = rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, size=3)
    colour = np.clip(np.asarray(COLOURS[colour_bit]) + jitter, 0.0, 1.0).astype(np.float32)
    size = (SIZES[size_bit] + rng.uniform(-SIZE_JITTER, SIZE_JITTER)) * scale
    center = np.array([w / 2.0, h / 2.0]) + rng.uniform(-CENTER_JITTER, CENTER_JITTER, 2) * scale
    return {
        "code": code,
        "shape": shape,
        "colour_bit": colour_bit,
        "size_bit": size_bit,
        "colour": colour,
        "size": float(size),
        "center": center,
    }


def render_concept_images(
    shape: np.ndarray,
    rgb: np.ndarray,
    size: np.ndarray,
    center: np.ndarray,
    image_size: int | Sequence[int] = REFERENCE_SIZE,
    supersample: int = SUPERSAMPLE,
) -> np.ndarray:
    """Renders a batch of single-object images (vectorised, in chunks).

    Args:
      shape: [n] 0 circle, 1 triangle.
      rgb: [n, 3] colours in [0, 1].
      size: [n] bounding-box half sides in pixels.
      center: [n, 2] (x, y) centres in pixels from the top-left corner, y down.
      image_size: H or (H, W).
      supersample: s; coverage is the mean of s x s point samples per pixel.

    Returns:
      [n, H, W, 3] float32 in [0, 1]: coverage * colour on black.
    """
    h, w = _hw(image_size)
    s = int(supersample)
    shape = np.asarray(shape).reshape(-1)
    rgb = np.asarray(rgb, np.float32).reshape(-1, 3)
    size = np.asarray(size, np.float64).reshape(-1)
    center = np.asarray(center, np.float64).reshape(-1, 2)
    n = len(shape)
    out = np.empty((n, h, w, 3), np.float32)
    xs = (np.arange(w * s) + 0.5) / s  # sample positions in pixel units
    ys = (np.arange(h * s) + 0.5) / s
    chunk = max(1, _SAMPLES_PER_CHUNK // (h * w * s * s))
    col = (slice(None), None, None)
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        r = size[sl][col]
        dx = xs[None, None, :] - center[sl, 0][col]  # [k, 1, W*s]
        dy = ys[None, :, None] - center[sl, 1][col]  # [k, H*s, 1], y down
        circle = dx * dx + dy * dy <= r * r
        # Apex at dy = -r, base at dy = +r; the half width grows linearly from 0 to r.
        triangle = (dy >= -r) & (dy <= r) & (2.0 * np.abs(dx) <= dy + r)
        inside = np.where(shape[sl][col] == 1, triangle, circle)
        coverage = inside.reshape(-1, h, s, w, s).mean(axis=(2, 4), dtype=np.float32)
        out[sl] = coverage[..., None] * rgb[sl][:, None, None, :]
    return out


def render_concept_image(
    shape: int,
    rgb: Sequence[float] | np.ndarray,
    size: float,
    center: Sequence[float] | np.ndarray,
    image_size: int | Sequence[int] = REFERENCE_SIZE,
    supersample: int = SUPERSAMPLE,
) -> np.ndarray:
    """One image: [H, W, 3] float32 in [0, 1] (see `render_concept_images`).

    Args:
      shape: 0 circle, 1 triangle.
      rgb: (3,) colour in [0, 1].
      size: bounding-box half side (circle radius) in pixels.
      center: (x, y) in pixels from the top-left corner, y down.
      image_size: H or (H, W).
      supersample: point samples per pixel side.
    """
    images = render_concept_images(
        np.array([shape]),
        np.asarray(rgb)[None],
        np.array([size]),
        np.asarray(center)[None],
        image_size,
        supersample,
    )
    return images[0]


def example_rng(seed: int, split: str, index: int, code: str) -> np.random.Generator:
    """The generator of example `index` of `split` with `code` (crc32: a stable split hash)."""
    return np.random.default_rng(
        np.random.SeedSequence([seed, zlib.crc32(split.encode()), index, code_index(code)])
    )


def concept_example(
    seed: int,
    split: str,
    index: int,
    code: str,
    image_size: int | Sequence[int] = REFERENCE_SIZE,
    supersample: int = SUPERSAMPLE,
) -> dict:
    """One example, a pure function of its arguments: `sample_concepts` plus 'image'.

    Returns:
      The dict of `sample_concepts` with 'image': [H, W, 3] float32 in [0, 1].
    """
    concepts = sample_concepts(example_rng(seed, split, index, code), code, image_size)
    concepts["image"] = render_concept_image(
        concepts["shape"],
        concepts["colour"],
        concepts["size"],
        concepts["center"],
        image_size,
        supersample,
    )
    return concepts


def to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 in [0, 1]."""
    return np.asarray(images, np.float32) / 255.0


# --------------------------------------------------------------------------------------------
# Arrays and the procedural source.


def concept_info(image_size: tuple[int, int]) -> SourceInfo:
    """8 classes named by their codes '000'..'111' (class id = code integer)."""
    return SourceInfo(num_classes=8, class_names=ALL_CODES, image_shape=(*image_size, 3))


def concept_arrays(
    images: np.ndarray, code: np.ndarray, colour: np.ndarray, size: np.ndarray, center: np.ndarray
) -> dict[str, np.ndarray]:
    """The arrays of a split from its uint8 images, code integers and raw values.

    Args:
      images: [n, H, W, 3] uint8.
      code: [n] code integers 0..7.
      colour: [n, 3] RGB.
      size: [n] normalised size (half side / (min(H, W) / 2)).
      center: [n, 2] (x / W, y / H).
    """
    code = np.asarray(code, np.int32).reshape(-1)
    shape = (code >> 2) & 1
    return {
        "image": np.asarray(images, np.uint8),
        "shape": shape,
        "shape_onehot": np.eye(2, dtype=np.float32)[shape],
        "colour": np.asarray(colour, np.float32).reshape(-1, 3),
        "colour_bit": (code >> 1) & 1,
        "size": np.asarray(size, np.float32).reshape(-1),
        "size_bit": code & 1,
        "code": code,
        "label": code.copy(),
        "center": np.asarray(center, np.float32).reshape(-1, 2),
    }


@functools.lru_cache(maxsize=8)
@cached_arrays  # and on disk, across runs (dllab_jax/data/cache.py)
def generate_concepts(
    seed: int,
    split: str,
    num_examples: int,
    image_size: tuple[int, int],
    codes: tuple[str, ...],
    supersample: int = SUPERSAMPLE,
) -> dict[str, np.ndarray]:
    """Examples 0..n-1 of a split (example i has codes[i % len(codes)]), cached, read-only."""
    h, w = image_size
    samples = []
    for i in range(num_examples):
        code = codes[i % len(codes)]
        samples.append(sample_concepts(example_rng(seed, split, i, code), code, (h, w)))
    shape = np.array([c["shape"] for c in samples], np.int32)
    colour = np.array([c["colour"] for c in samples], np.float32).reshape(-1, 3)
    size_px = np.array([c["size"] for c in samples], np.float64)
    center_px = np.array([c["center"] for c in samples], np.float64).reshape(-1, 2)
    images = to_uint8(render_concept_images(shape, colour, size_px, center_px, (h, w), supersample))
    arrays = concept_arrays(
        images,
        np.array([code_index(c["code"]) for c in samples], np.int32),
        colour,
        size_px / (min(h, w) / 2.0),
        center_px / np.array([w, h], np.float64),
    )
    for array in arrays.values():
        array.setflags(write=False)
    return arrays


def _check_split(name: str, split: str) -> None:
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r} for data source {name!r}; use one of {SPLITS}")


@register("concepts")
def make_concepts(data_config: ml_collections.ConfigDict, split: str) -> ArraySource:
    """The procedural concept source for `split` ('train', 'val' or 'test').

    Reads `seed` (0), `image_size` (28), `supersample` (4), `num_train` / `num_val` /
    `num_test` (5000 / 800 / 800) and `codes` / `train_codes` / `eval_codes` (see the module
    docstring).
    """
    _check_split("concepts", split)
    seed = int_key(data_config, "seed", 0, 0)
    num = int_key(data_config, f"num_{split}", NUM_EXAMPLES[split], 0)
    h, w = image_size_key(data_config, REFERENCE_SIZE, minimum=8)
    supersample = int_key(data_config, "supersample", SUPERSAMPLE, 1)
    codes = split_codes(data_config, split)
    arrays = generate_concepts(seed, split, num, (h, w), codes, supersample)
    return ArraySource(arrays, concept_info((h, w)))


# --------------------------------------------------------------------------------------------
# The file layout: CLEVR_<abc>_<id>.png + .json.

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
        raise UserError(f"{json_path} must hold a JSON object (schema: concepts.py docstring)")
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


@register("concepts_folder")
def make_concepts_folder(data_config: ml_collections.ConfigDict, split: str) -> ArraySource:
    """The concept set from `CLEVR_<abc>_<id>.png` + `.json` files, read eagerly.

    Reads `root`, `image_size` (optional) and `codes` / `train_codes` / `eval_codes` (see the
    module docstring for the layouts and how the code keys filter each).
    """
    _check_split("concepts_folder", split)
    root = data_config.get("root", None)
    if not root:
        raise UserError(
            "config.data.root is not set; point it at the folder of CLEVR_<abc>_<id>.png files "
            "(or with train/, val/, test/ subfolders of them)"
        )
    root = os.path.expanduser(str(root))
    if not os.path.isdir(root):
        raise UserError(f"concept folder root {root} does not exist; set config.data.root")
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

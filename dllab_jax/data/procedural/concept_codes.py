"""The concepts of the diffusion exercise's data set (Okawa et al. 2023, "Compositional
abilities emerge multiplicatively"): one coloured shape on black, described by three binary
concepts.

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

This module holds the concepts' nominal values, the codes, how a config names them, and the
arrays every concept source returns (`concept_arrays`); `concept_images.py` samples and
renders examples, `sources/concepts.py` and `sources/concepts_folder.py` serve them.

Arrays (both sources, from `get`): `image` [n, H, W, 3] uint8 (the [0, 1] render * 255
rounded; `to_unit` converts back), `shape` [n] int32, `shape_onehot` [n, 2] float32, `colour`
[n, 3] float32 (raw RGB), `colour_bit` [n] int32, `size` [n] float32 (normalised: the
bounding-box half side / (min(H, W) / 2), so about 0.68 large and 0.39 small, resolution
independent and MLP friendly), `size_bit` [n] int32, `code` [n] int32 (0..7), plus `label`
[n] int32 (= `code`, so classification tasks and the pipeline work unchanged) and `center`
[n, 2] float32 (x / W, y / H). `info`: 8 classes named '000'..'111', image_shape (H, W, 3).
"""

from __future__ import annotations

import re

import ml_collections
import numpy as np

from dllab_jax.data.base import SourceInfo
from dllab_jax.errors import UserError

# The image side at which the pixel sizes below hold; they scale with min(H, W) / 28.
REFERENCE_SIZE = 28
SHAPE_NAMES: tuple[str, ...] = ("circle", "triangle")
COLOUR_NAMES: tuple[str, ...] = ("red", "blue")
SIZE_NAMES: tuple[str, ...] = ("large", "small")
# Nominal RGB of colour bit 0 and 1.
COLOURS: tuple[tuple[float, float, float], ...] = ((0.9, 0.1, 0.1), (0.1, 0.1, 0.9))
LARGE_SIZE = 9.5  # bounding-box half side in pixels (circle radius)
SMALL_SIZE = 5.5
SIZES: tuple[float, ...] = (LARGE_SIZE, SMALL_SIZE)  # indexed by the size bit

ALL_CODES: tuple[str, ...] = tuple(f"{i:03b}" for i in range(8))
SEEN_CODES: tuple[str, ...] = ("000", "001", "100", "010")
UNSEEN_CODES: tuple[str, ...] = ("011", "110", "101", "111")

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


def to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 in [0, 1]."""
    return np.asarray(images, np.float32) / 255.0


# --------------------------------------------------------------------------------------------
# Arrays.


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

"""The checks every source shares: split names, config keys, image sizes, folders, and the
per-example generator of the procedural sources.

Each raises a one-line `UserError` naming the config key or path to fix.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Mapping, Sequence

import ml_collections
import numpy as np

from dllab_jax.errors import UserError

SPLITS: tuple[str, ...] = ("train", "val", "test")


def check_split(name: str, split: str, splits: Sequence[str] = SPLITS) -> None:
    """A UserError unless `split` is one of `splits` (for the data source `name`)."""
    if split not in splits:
        raise UserError(
            f"unknown split {split!r} for data source {name!r}; use one of {tuple(splits)}"
        )


def int_key(data_config: ml_collections.ConfigDict, key: str, default: int, minimum: int) -> int:
    """`data_config[key]` (or `default`) as an int >= `minimum`, else a UserError."""
    value = data_config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise UserError(f"config.data.{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def split_size(
    data_config: ml_collections.ConfigDict, split: str, defaults: Mapping[str, int]
) -> int:
    """`config.data.num_<split>` (default `defaults[split]`): examples of a procedural split."""
    return int_key(data_config, f"num_{split}", defaults[split], 0)


def _pair(value, cast, key: str, expected: str) -> tuple:
    """`value` as a pair of `cast`, else a UserError naming `config.data.<key>` and `expected`."""
    try:
        if isinstance(value, str):  # "(1, 2)" would otherwise iterate as characters
            raise TypeError
        first, second = (cast(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(f"config.data.{key} must be {expected}, got {value!r}") from None
    return first, second


def image_size_key(
    data_config: ml_collections.ConfigDict, default: int, minimum: int = 1
) -> tuple[int, int]:
    """`data_config.image_size` (an int or (height, width)) as (H, W), else a UserError."""
    value = data_config.get("image_size", default)
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        value = (value, value)
    h, w = _pair(value, int, "image_size", "an int or (height, width)")
    if min(h, w) < minimum:
        raise UserError(f"config.data.image_size must be at least {minimum} pixels, got {value!r}")
    return h, w


def size_range_key(
    data_config: ml_collections.ConfigDict, default: tuple[float, float]
) -> tuple[float, float]:
    """`data_config.size_range` (or `default`): (low, high) with 0 < low <= high <= 0.5."""
    value = data_config.get("size_range", default)
    low, high = _pair(value, float, "size_range", "(low, high) fractions of the image side")
    if not 0.0 < low <= high <= 0.5:
        raise UserError(
            f"config.data.size_range must satisfy 0 < low <= high <= 0.5, got {value!r}"
        )
    return low, high


def image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """H or (H, W), as the generators take it, as (H, W)."""
    if isinstance(image_size, int | np.integer):
        return int(image_size), int(image_size)
    h, w = image_size
    return int(h), int(w)


def example_rng(seed: int, split: str, index: int, *stream: int) -> np.random.Generator:
    """The generator of example `index` of `split`: independent of the split's size.

    The split name enters through a stable hash (crc32, not Python's salted `hash`), so every
    split has its own stream and new split names need no table. `stream` adds integers that
    tell examples of one index apart (the concept code of `concepts`).
    """
    entropy = [seed, zlib.crc32(split.encode()), index, *stream]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def root_folder(
    data_config: ml_collections.ConfigDict,
    what: str,
    label: str,
    hint: str = "set config.data.root",
) -> str:
    """`config.data.root` (user expanded), a folder that exists, else a UserError.

    Args:
      data_config: `config.data`.
      what: what the root must be ("the folder holding train/, valid/, test/").
      label: names the root in the message ("image folder" -> "image folder root ...").
      hint: what to do when the folder does not exist.
    """
    root = data_config.get("root", None)
    if not root:
        raise UserError(f"config.data.root is not set; point it at {what}")
    root = os.path.expanduser(str(root))
    if not os.path.isdir(root):
        raise UserError(f"{label} root {root} does not exist; {hint}")
    return root


def require_dir(path: str, what: str) -> str:
    """`path` if it is a folder, else a UserError naming it and saying `what` to do."""
    if not os.path.isdir(path):
        raise UserError(f"folder {path} does not exist; {what}")
    return path


def require_file(path: str, what: str) -> str:
    """`path` if it is a file, else a UserError naming it and saying `what` to do."""
    if not os.path.isfile(path):
        raise UserError(f"file {path} does not exist; {what}")
    return path


def holdout_range(
    data_config: ml_collections.ConfigDict,
    split: str,
    total: int,
    default_size: int,
    too_few: Callable[[int, int], str],
) -> tuple[int, int]:
    """(start, stop) of `split` when `total` sorted items are split at the end: the last
    `config.data.num_test` for 'test', the `num_val` before them for 'val' (both default
    `default_size`), the rest for 'train'.

    Raises:
      UserError: `too_few(num_val, num_test)` when that leaves no training item.
    """
    num_val = int_key(data_config, "num_val", default_size, 0)
    num_test = int_key(data_config, "num_test", default_size, 0)
    num_train = total - num_val - num_test
    if num_train < 1:
        raise UserError(too_few(num_val, num_test))
    return {
        "train": (0, num_train),
        "val": (num_train, num_train + num_val),
        "test": (num_train + num_val, total),
    }[split]

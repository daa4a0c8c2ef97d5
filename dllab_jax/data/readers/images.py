"""Image files and arrays: decoding with one-line errors, resizing images and label maps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from dllab_jax.errors import UserError


def load_image(path: str) -> Image.Image:
    """An image file decoded by PIL (pixels loaded, file closed).

    Raises:
      UserError: the file is missing, truncated or not an image, naming it; sources read
        lazily, so this can come mid-run, and the training loop saves before it stops.
    """
    try:
        image = Image.open(path)
        image.load()  # decodes now (and closes the file), so a broken file fails here
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(
            f"image file {path} cannot be read ({reason}); replace or remove it"
        ) from None
    return image


def read_image(path: str, image_size: tuple[int, int]) -> np.ndarray:
    """One image file as [H, W, 3] uint8: converted to RGB, resized bilinearly if needed.

    Args:
      path: the image file.
      image_size: (H, W) to return.
    """
    h, w = image_size
    image = load_image(path).convert("RGB")
    if image.size != (w, h):
        image = image.resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def read_images(paths: Sequence[str], image_size: tuple[int, int]) -> np.ndarray:
    """Image files as [n, H, W, 3] uint8 (see `read_image`); the lazy file sources' `get`."""
    h, w = image_size
    images = np.empty((len(paths), h, w, 3), np.uint8)
    for i, path in enumerate(paths):
        images[i] = read_image(path, (h, w))
    return images


def _nearest_indices(n_out: int, n_in: int) -> np.ndarray:
    """Source index of each output cell for nearest-neighbour resizing (centres aligned)."""
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of [h, w, ...] to [H, W, ...] (exact for label maps)."""
    h, w = size
    if array.shape[:2] == (h, w):
        return array
    rows = _nearest_indices(h, array.shape[0])
    cols = _nearest_indices(w, array.shape[1])
    return array[rows[:, None], cols[None, :]]


def resize_image(image: np.ndarray, size: tuple[int, int], resample: str) -> np.ndarray:
    """[h, w, 3] uint8 -> [H, W, 3] uint8 with 'nearest' or 'bilinear' (PIL, antialiased)."""
    if resample == "nearest":
        return resize_nearest(image, size)
    if resample != "bilinear":
        raise UserError(
            f"config.data.image_resample must be 'nearest' or 'bilinear', got {resample!r}"
        )
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    return np.asarray(pil.resize((w, h), Image.Resampling.BILINEAR), dtype=np.uint8)

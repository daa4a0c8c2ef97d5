"""Fixtures of the data tests."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


def _write_jpeg(path: str, rgb: tuple[int, int, int], size: tuple[int, int]) -> None:
    w, h = size
    pixels = np.zeros((h, w, 3), np.uint8)
    pixels[:, : w // 2] = rgb
    Image.fromarray(pixels).save(path, quality=95)


@pytest.fixture
def write_jpeg():
    """`write_jpeg(path, rgb, size)`: a JPEG whose left half is `rgb` and right half black,
    `size` = (width, height)."""
    return _write_jpeg

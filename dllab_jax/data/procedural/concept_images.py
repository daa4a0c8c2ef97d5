"""Examples of the concept data set: raw concept values sampled from a seed, rendered by
supersampling (see `concept_codes.py` for the concepts and codes).

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
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dllab_jax.data.checks import example_rng, image_hw
from dllab_jax.data.procedural.concept_codes import (
    COLOURS,
    REFERENCE_SIZE,
    SIZES,
    code_bits,
    code_index,
)

COLOUR_JITTER = 0.03  # uniform, per channel, then clipped to [0, 1]
SIZE_JITTER = 0.5  # uniform, pixels
CENTER_JITTER = 2.0  # uniform per axis, pixels
SUPERSAMPLE = 4

# Point samples per rendering chunk: bounds the [n, H * s, W * s] temporaries to ~16 MB each.
_SAMPLES_PER_CHUNK = 2**22


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
    h, w = image_hw(image_size)
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
    h, w = image_hw(image_size)
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


def concept_rng(seed: int, split: str, index: int, code: str) -> np.random.Generator:
    """The generator of example `index` of `split` with `code`."""
    return example_rng(seed, split, index, code_index(code))


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
    concepts = sample_concepts(concept_rng(seed, split, index, code), code, image_size)
    concepts["image"] = render_concept_image(
        concepts["shape"],
        concepts["colour"],
        concepts["size"],
        concepts["center"],
        image_size,
        supersample,
    )
    return concepts

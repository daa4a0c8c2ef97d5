"""The procedural scene model: what the offline image sources draw, and how it is sampled.

The generator is built in layers so that later experiments reuse it by writing only a new
sampler and a thin source:

1. *Scene description* (here): `Scene` = a `Background` plus `SceneObject`s in painting
   order. All geometry is resolution independent (fractions of the image side), so the same
   scene renders at 28, 32 or 64 pixels.
2. *Samplers* (here): functions of an `np.random.Generator` that return scenes or their parts
   (`sample_object`, `sample_background`, `sample_distractors`). Each example gets its own
   generator from `checks.example_rng(seed, split, index)`, so an example never depends on the
   split size. The sources compose them: `sources/shapes.py`, `sources/scenes.py`, and the
   captioned scenes of `caption_scenes.py`.
3. *Rasteriser* (`raster.py`): renders a batch of scenes with numpy, anti-aliased, with a
   per-pixel map of the visible object (for masks).
4. *Sources* (`dllab_jax/data/sources/`): sample, render and label a split.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

# The ten classes of `shapes`, in label order. All stay distinct under any rotation.
CLASS_KINDS: tuple[str, ...] = (
    "circle",
    "triangle",
    "square",
    "pentagon",
    "hexagon",
    "star",
    "cross",
    "ring",
    "crescent",
    "heart",
)
# Clutter that is never a class: a line segment and an elongated ellipse.
DISTRACTOR_KINDS: tuple[str, ...] = ("stroke", "ellipse")


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One object of a scene.

    Attributes:
      kind: a key of `SDFS` (one of `CLASS_KINDS` or `DISTRACTOR_KINDS`).
      rgb: colour, each channel in [0, 1].
      center: (x, y) of the centre as fractions of the image width and height; y points down.
      size: radius of the circle circumscribing the shape, as a fraction of min(H, W). For a
        stroke, half its length; for an ellipse, its semi-major axis.
      rotation: counter-clockwise rotation on screen, in radians. At 0 the triangle, pentagon,
        star and heart point up and the square and hexagon have a flat top.
      thickness: strokes and ellipses only: the half width (semi-minor axis) in units of
        `size`.
    """

    kind: str
    rgb: tuple[float, float, float]
    center: tuple[float, float]
    size: float
    rotation: float = 0.0
    thickness: float = 0.0


@dataclasses.dataclass(frozen=True)
class Background:
    """A linear colour gradient plus random texture.

    Attributes:
      rgb0: colour at the start of the gradient, each channel in [0, 1].
      rgb1: colour at the end of the gradient.
      angle: direction of the gradient on screen, in radians (0 = left to right).
      blotch_std: std of the low-frequency colour offsets (a `BLOTCH_GRID`^2 grid of random
        colours, upsampled bilinearly to the image).
      noise_std: std of independent per-pixel, per-channel Gaussian noise.
      texture_seed: seeds the blotches and the noise, so the description stays small.
    """

    rgb0: tuple[float, float, float]
    rgb1: tuple[float, float, float]
    angle: float = 0.0
    blotch_std: float = 0.0
    noise_std: float = 0.0
    texture_seed: int = 0


@dataclasses.dataclass(frozen=True)
class Scene:
    """A background and objects painted over it in order (the last one is on top)."""

    background: Background
    objects: tuple[SceneObject, ...]


# --------------------------------------------------------------------------------------------
# Samplers.


def random_rgb(rng: np.random.Generator) -> tuple[float, float, float]:
    """A colour drawn uniformly from the RGB cube."""
    r, g, b = rng.random(3)
    return float(r), float(g), float(b)


def contrasting_rgb(
    rng: np.random.Generator, other: Sequence[float], min_distance: float = 0.4
) -> tuple[float, float, float]:
    """A random colour at least `min_distance` (Euclidean, RGB in [0, 1]) from `other`.

    Rejection sampling; after 32 misses (rare) it returns the colour opposite to `other`.
    """
    other = np.asarray(other)
    for _ in range(32):
        rgb = rng.random(3)
        if np.linalg.norm(rgb - other) >= min_distance:
            return float(rgb[0]), float(rgb[1]), float(rgb[2])
    opposite = np.where(other < 0.5, 1.0, 0.0)
    return float(opposite[0]), float(opposite[1]), float(opposite[2])


def sample_object(
    rng: np.random.Generator,
    kind: str,
    rgb: tuple[float, float, float],
    size_range: tuple[float, float] = (0.13, 0.36),
    margin: float = 0.9,
) -> SceneObject:
    """An object of `kind` with uniform size, uniform rotation and a centre that keeps it inside.

    Args:
      rng: the example's generator.
      kind: the object's kind.
      rgb: its colour.
      size_range: range of the circumradius, as a fraction of the image side.
      margin: the centre stays `margin * size` away from the border (below 1 lets corners of
        the circumscribing circle, which most shapes do not fill, leave the image).
    """
    size = rng.uniform(*size_range)
    cx, cy = rng.uniform(margin * size, 1.0 - margin * size, size=2)
    rotation = rng.uniform(0.0, 2.0 * np.pi)
    return SceneObject(kind, rgb, (float(cx), float(cy)), float(size), float(rotation))


def sample_background(
    rng: np.random.Generator,
    avoid_rgb: Sequence[float] | None = None,
    blotch_std: float = 0.1,
    noise_std: float = 0.05,
) -> Background:
    """A gradient between two random colours (both far from `avoid_rgb`, if given) plus texture."""
    if avoid_rgb is None:
        rgb0, rgb1 = random_rgb(rng), random_rgb(rng)
    else:
        rgb0, rgb1 = contrasting_rgb(rng, avoid_rgb), contrasting_rgb(rng, avoid_rgb)
    angle = float(rng.uniform(0.0, 2.0 * np.pi))
    texture_seed = int(rng.integers(2**31))
    return Background(rgb0, rgb1, angle, blotch_std, noise_std, texture_seed)


def _anywhere(
    rng: np.random.Generator, kind: str, size: float, thickness: float | Callable[[], float]
) -> SceneObject:
    """An object of `kind` centred anywhere, of random colour and rotation in [0, pi).

    Draws the centre, the colour and the rotation, in that order; a callable `thickness` is
    called after them (it may draw too).
    """
    cx, cy = rng.uniform(0.0, 1.0, size=2)
    rgb = random_rgb(rng)
    rotation = float(rng.uniform(0.0, np.pi))
    if callable(thickness):
        thickness = thickness()
    return SceneObject(kind, rgb, (float(cx), float(cy)), float(size), rotation, float(thickness))


def sample_distractors(
    rng: np.random.Generator, num_strokes: int, num_blobs: int
) -> list[SceneObject]:
    """Random-coloured straight strokes and small elongated ellipses anywhere in the image.

    Strokes are thin (1-2.5 px wide at 32 px) and ellipses small and elongated (aspect at most
    0.6), so neither can be mistaken for a class.
    """
    objects = []
    for _ in range(num_strokes):
        half_length = rng.uniform(0.12, 0.4)
        half_width = rng.uniform(0.015, 0.04)
        objects.append(_anywhere(rng, "stroke", half_length, half_width / half_length))
    for _ in range(num_blobs):
        semi_major = rng.uniform(0.05, 0.12)
        objects.append(_anywhere(rng, "ellipse", semi_major, lambda: rng.uniform(0.25, 0.6)))
    return objects

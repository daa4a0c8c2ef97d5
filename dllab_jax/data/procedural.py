"""Procedurally generated image data sets that ship with the package (no download).

The generator is built in layers so that later experiments reuse it by writing only a new
sampler and a thin split builder:

1. *Scene description*: `Scene` = a `Background` plus `SceneObject`s in painting order. All
   geometry is resolution independent (fractions of the image side), so the same scene
   renders at 28, 32 or 64 pixels.
2. *Samplers*: functions of an `np.random.Generator` that return scenes
   (`sample_shapes_scene`, built from `sample_object`, `sample_background`,
   `sample_distractors`). Each example gets its own generator from
   `example_rng(seed, split, index)`, so an example never depends on the split size.
3. *Rasteriser*: `rasterize(scenes, image_size)` renders a batch of scenes with numpy,
   vectorised over all objects of one kind at once. Objects are anti-aliased analytically
   from signed distance functions (coverage = clip(0.5 - distance in pixels, 0, 1)), and
   besides the image it returns a per-pixel map of the visible object (for masks).
4. *Split builders*: `generate_shapes` and the registered source `shapes`.

`shapes` is the offline default of the image-classification experiment: one of ten shape
classes per image, with random colour, position, scale and rotation, on a cluttered
background (colour gradient, low-frequency colour blotches, pixel noise, distractor strokes
and elongated blobs that are not one of the classes).
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Callable, Sequence

import ml_collections
import numpy as np

from dllab_jax.data.base import ArraySource, SourceInfo, image_size_key, int_key
from dllab_jax.data.cache import cached_arrays
from dllab_jax.data.registry import register
from dllab_jax.errors import UserError

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

SPLITS: tuple[str, ...] = ("train", "val", "test")

# Side of the coarse grid of random colour offsets that is upsampled into background blotches.
BLOTCH_GRID = 4


# --------------------------------------------------------------------------------------------
# (a) Scene description.


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


def class_label(scene: Scene) -> int:
    """The class of a single-object classification scene: the index of its one class kind."""
    labels = [CLASS_KINDS.index(o.kind) for o in scene.objects if o.kind in CLASS_KINDS]
    if len(labels) != 1:
        raise ValueError(f"expected exactly one object of a class kind, got {len(labels)}")
    return labels[0]


# --------------------------------------------------------------------------------------------
# (b) Samplers.


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of example `index` of `split`: independent of the split's size.

    The split name enters through a stable hash (crc32, not Python's salted `hash`), so every
    split has its own stream and new split names need no table.
    """
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode()), index]))


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
        cx, cy = rng.uniform(0.0, 1.0, size=2)
        objects.append(
            SceneObject(
                "stroke",
                random_rgb(rng),
                (float(cx), float(cy)),
                float(half_length),
                float(rng.uniform(0.0, np.pi)),
                float(half_width / half_length),
            )
        )
    for _ in range(num_blobs):
        semi_major = rng.uniform(0.05, 0.12)
        cx, cy = rng.uniform(0.0, 1.0, size=2)
        objects.append(
            SceneObject(
                "ellipse",
                random_rgb(rng),
                (float(cx), float(cy)),
                float(semi_major),
                float(rng.uniform(0.0, np.pi)),
                float(rng.uniform(0.25, 0.6)),
            )
        )
    return objects


def sample_shapes_scene(rng: np.random.Generator) -> Scene:
    """A `shapes` example: one object of a random class over a cluttered background.

    Layers, bottom to top: a gradient background that contrasts with the object's colour,
    2-4 strokes and 1-3 blobs, the object, and with probability 0.5 one more stroke that can
    cross it (partial occlusion).
    """
    kind = CLASS_KINDS[int(rng.integers(len(CLASS_KINDS)))]
    rgb = random_rgb(rng)
    background = sample_background(rng, avoid_rgb=rgb)
    behind = sample_distractors(rng, int(rng.integers(2, 5)), int(rng.integers(1, 4)))
    target = sample_object(rng, kind, rgb)
    front = sample_distractors(rng, int(rng.random() < 0.5), 0)
    return Scene(background, (*behind, target, *front))


# --------------------------------------------------------------------------------------------
# (c) Rasteriser. Signed distance functions take local coordinates `x, y` (arrays of any
# broadcastable shape, y up, in units of the object's `size`) and `thickness` (broadcastable)
# and return the signed distance in the same units, negative inside.

SDF = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _length(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.sqrt(x * x + y * y)


def _star_like(x: np.ndarray, y: np.ndarray, n: int, m: float, offset: float = 0.0) -> np.ndarray:
    """Inigo Quilez's sdStar with circumradius 1: m = 2 gives the regular n-gon, larger m a
    pointier star. A vertex points up at offset 0; `offset` rotates the shape clockwise.
    """
    an = np.pi / n
    en = np.pi / m
    acs = (np.cos(an), np.sin(an))
    ecs = (np.cos(en), np.sin(en))
    # Fold the plane into the first sector, where the boundary is one segment.
    bn = np.mod(np.arctan2(x, y) + offset, 2.0 * an) - an
    r = _length(x, y)
    px = r * np.cos(bn) - acs[0]
    py = r * np.abs(np.sin(bn)) - acs[1]
    t = np.clip(-(px * ecs[0] + py * ecs[1]), 0.0, acs[1] / ecs[1])
    px = px + ecs[0] * t
    py = py + ecs[1] * t
    return _length(px, py) * np.sign(px)


def _box(x: np.ndarray, y: np.ndarray, bx: float, by: float) -> np.ndarray:
    dx = np.abs(x) - bx
    dy = np.abs(y) - by
    return _length(np.maximum(dx, 0.0), np.maximum(dy, 0.0)) + np.minimum(np.maximum(dx, dy), 0.0)


def _heart(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Inigo Quilez's sdHeart, rescaled and shifted so its circumradius is about 1 around 0."""
    scale = 0.64  # the circumradius of iq's heart around (0, 0.55)
    x = np.abs(x) * scale
    y = y * scale + 0.55
    upper = _length(x - 0.25, y - 0.75) - np.sqrt(2.0) / 4.0
    s = 0.5 * np.maximum(x + y, 0.0)
    lower = np.sqrt(np.minimum(x * x + (y - 1.0) ** 2, (x - s) ** 2 + (y - s) ** 2)) * np.sign(
        x - y
    )
    return np.where(x + y > 1.0, upper, lower) / scale


def _ellipse(x: np.ndarray, y: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """Approximate distance to an ellipse with semi-axes (1, minor); accurate near the edge,
    which is all anti-aliasing needs.
    """
    k0 = _length(x, y / minor)
    k1 = _length(x, y / (minor * minor))
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


SDFS: dict[str, SDF] = {
    "circle": lambda x, y, t: _length(x, y) - 1.0,
    "triangle": lambda x, y, t: _star_like(x, y, 3, 2.0),
    "square": lambda x, y, t: _star_like(x, y, 4, 2.0, offset=np.pi / 4),
    "pentagon": lambda x, y, t: _star_like(x, y, 5, 2.0),
    "hexagon": lambda x, y, t: _star_like(x, y, 6, 2.0, offset=np.pi / 6),
    "star": lambda x, y, t: _star_like(x, y, 5, 3.0),
    "cross": lambda x, y, t: np.minimum(_box(x, y, 0.95, 0.3), _box(x, y, 0.3, 0.95)),
    "ring": lambda x, y, t: np.abs(_length(x, y) - 0.72) - 0.28,
    # A disc minus a disc shifted right: the horns point right at rotation 0.
    "crescent": lambda x, y, t: np.maximum(_length(x, y) - 1.0, 0.8 - _length(x - 0.55, y)),
    "heart": lambda x, y, t: _heart(x, y),
    # A segment from (-1, 0) to (1, 0) with half width `thickness`.
    "stroke": lambda x, y, t: _length(x - np.clip(x, -1.0, 1.0), y) - t,
    "ellipse": _ellipse,
}


def _image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int | np.integer):
        return int(image_size), int(image_size)
    h, w = image_size
    return int(h), int(w)


def object_coverage(objects: Sequence[SceneObject], image_size: int | Sequence[int]) -> np.ndarray:
    """Anti-aliased coverage of each object alone.

    Args:
      objects: m objects.
      image_size: H or (H, W).

    Returns:
      [m, H, W] float32 in [0, 1]: the fraction of each pixel the object covers, from the
      signed distance d (pixels) at the pixel centre as clip(0.5 - d, 0, 1) (exact for edges
      on pixel boundaries, a box-filter approximation elsewhere).
    """
    h, w = _image_hw(image_size)
    m = len(objects)
    coverage = np.zeros((m, h, w), np.float32)
    if m == 0:
        return coverage
    kinds = np.array([o.kind for o in objects])
    cx = np.array([o.center[0] for o in objects], np.float32) * w
    cy = np.array([o.center[1] for o in objects], np.float32) * h
    size_px = np.array([o.size for o in objects], np.float32) * min(h, w)
    rot = np.array([o.rotation for o in objects], np.float32)
    thickness = np.array([o.thickness for o in objects], np.float32)
    px = np.arange(w, dtype=np.float32) + 0.5  # pixel centres
    py = np.arange(h, dtype=np.float32) + 0.5
    for kind in np.unique(kinds):
        if kind not in SDFS:
            raise ValueError(f"unknown object kind {kind!r}; known: {sorted(SDFS)}")
        sel = np.flatnonzero(kinds == kind)
        col = (slice(None), None, None)
        dx = px[None, None, :] - cx[sel][col]  # [k, 1, W]
        dy = cy[sel][col] - py[None, :, None]  # [k, H, 1], flipped so y points up
        cos, sin = np.cos(rot[sel])[col], np.sin(rot[sel])[col]
        s = size_px[sel][col]
        # Rotate the pixel grid by -rotation: the object turns counter-clockwise on screen.
        x = (cos * dx + sin * dy) / s
        y = (cos * dy - sin * dx) / s
        d = SDFS[str(kind)](x, y, thickness[sel][col])
        coverage[sel] = np.clip(0.5 - d * s, 0.0, 1.0)
    return coverage


def _bilinear_matrix(n_out: int, n_in: int) -> np.ndarray:
    """[n_out, n_in] weights that upsample a length-n_in signal (cell centres aligned)."""
    u = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0, n_in - 1.0)
    lo = np.floor(u).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (u - lo).astype(np.float32)
    weights = np.zeros((n_out, n_in), np.float32)
    np.add.at(weights, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(weights, (np.arange(n_out), hi), frac)
    return weights


def render_backgrounds(
    backgrounds: Sequence[Background], image_size: int | Sequence[int]
) -> np.ndarray:
    """Renders backgrounds to [n, H, W, 3] float32 (not clipped)."""
    h, w = _image_hw(image_size)
    n = len(backgrounds)
    rgb0 = np.array([b.rgb0 for b in backgrounds], np.float32).reshape(n, 1, 1, 3)
    rgb1 = np.array([b.rgb1 for b in backgrounds], np.float32).reshape(n, 1, 1, 3)
    angle = np.array([b.angle for b in backgrounds], np.float32).reshape(n, 1, 1)
    x = (np.arange(w, dtype=np.float32) + 0.5) / w - 0.5
    y = (np.arange(h, dtype=np.float32) + 0.5) / h - 0.5
    cos, sin = np.cos(angle), np.sin(angle)
    # t runs from 0 to 1 across the image along the gradient direction, whatever the angle.
    t = 0.5 + (cos * x[None, None, :] + sin * y[None, :, None]) / (np.abs(cos) + np.abs(sin))
    images = rgb0 + t[..., None] * (rgb1 - rgb0)
    blotches = np.empty((n, BLOTCH_GRID, BLOTCH_GRID, 3), np.float32)
    noise = np.empty((n, h, w, 3), np.float32)
    for i, b in enumerate(backgrounds):
        rng = np.random.default_rng(b.texture_seed)
        blotches[i] = b.blotch_std * rng.standard_normal(blotches.shape[1:], np.float32)
        noise[i] = b.noise_std * rng.standard_normal(noise.shape[1:], np.float32)
    # Upsample [n, g, g, 3] -> [n, H, W, 3] as two matrix products (3x faster than einsum).
    g = BLOTCH_GRID
    up_h, up_w = _bilinear_matrix(h, g), _bilinear_matrix(w, g)
    cols = np.tensordot(blotches, up_w, axes=([2], [1]))  # [n, g, 3, W]
    rows = np.matmul(up_h, cols.reshape(n, g, 3 * w)).reshape(n, h, 3, w)
    images += rows.transpose(0, 1, 3, 2)
    images += noise
    return images


def rasterize(
    scenes: Sequence[Scene], image_size: int | Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Renders scenes, vectorised over every object of one kind in the batch.

    Args:
      scenes: n scenes.
      image_size: H or (H, W).

    Returns:
      images: [n, H, W, 3] float32 in [0, 1].
      visible: [n, H, W] int32: index into `scene.objects` of the topmost object that covers
        at least half of the pixel, -1 where none does (background).
    """
    h, w = _image_hw(image_size)
    n = len(scenes)
    images = render_backgrounds([s.background for s in scenes], (h, w))
    visible = np.full((n, h, w), -1, np.int32)
    objects = [o for s in scenes for o in s.objects]
    if objects:
        scene_idx = np.repeat(np.arange(n), [len(s.objects) for s in scenes])
        depth = np.concatenate([np.arange(len(s.objects)) for s in scenes])
        rgb = np.array([o.rgb for o in objects], np.float32)
        coverage = object_coverage(objects, (h, w))
        # Painter's algorithm, one depth level at a time: within a level every scene appears at
        # most once, so the fancy-indexed updates below never collide.
        for j in range(int(depth.max()) + 1):
            sel = np.flatnonzero(depth == j)
            idx = scene_idx[sel]
            alpha = coverage[sel]
            images[idx] += alpha[..., None] * (rgb[sel][:, None, None, :] - images[idx])
            visible[idx] = np.where(alpha >= 0.5, j, visible[idx])
    return np.clip(images, 0.0, 1.0), visible


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[..., C] floats in [0, 1] -> uint8, rounded."""
    return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# (d) Split builders.

# Pixels rendered per rasteriser call: bounds the [objects, H, W] temporaries to ~100 MB.
_PIXELS_PER_CHUNK = 2**20


def render_split(
    sampler: Callable[[np.random.Generator], Scene],
    seed: int,
    split: str,
    num_examples: int,
    image_size: int | Sequence[int],
) -> tuple[list[Scene], np.ndarray, np.ndarray]:
    """Samples and renders examples 0..num_examples-1 of `split` with `sampler`.

    Returns:
      scenes: the n scene descriptions (for labels, captions, masks).
      images: [n, H, W, 3] uint8.
      visible: [n, H, W] int32, as `rasterize` returns it.
    """
    h, w = _image_hw(image_size)
    scenes = [sampler(example_rng(seed, split, i)) for i in range(num_examples)]
    images = np.empty((num_examples, h, w, 3), np.uint8)
    visible = np.empty((num_examples, h, w), np.int32)
    chunk = max(1, _PIXELS_PER_CHUNK // (h * w))
    for start in range(0, num_examples, chunk):
        stop = min(start + chunk, num_examples)
        float_images, visible[start:stop] = rasterize(scenes[start:stop], (h, w))
        images[start:stop] = to_uint8(float_images)
    return scenes, images, visible


@functools.lru_cache(maxsize=8)
@cached_arrays  # and on disk, across runs (dllab_jax/data/cache.py)
def generate_shapes(
    seed: int, split: str, num_examples: int, image_size: int | tuple[int, int]
) -> dict[str, np.ndarray]:
    """The `shapes` examples 0..num_examples-1 of `split`, cached for the process.

    Returns:
      {'image': [n, H, W, 3] uint8, 'label': [n] int32}, read-only (they are shared by the
      cache; `ArraySource.get` returns copies).
    """
    scenes, images, _ = render_split(sample_shapes_scene, seed, split, num_examples, image_size)
    labels = np.array([class_label(s) for s in scenes], np.int32)
    images.setflags(write=False)
    labels.setflags(write=False)
    return {"image": images, "label": labels}


@register("shapes")
def make_shapes(data_config: ml_collections.ConfigDict, split: str) -> ArraySource:
    """The `shapes` source for `split` ('train', 'val' or 'test').

    Reads `data_config.seed` (default 0), `image_size` (int or (H, W), default 32) and
    `num_train` / `num_val` / `num_test` (defaults 20000 / 2000 / 2000).
    """
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r} for data source 'shapes'; use one of {SPLITS}")
    seed = int_key(data_config, "seed", 0, 0)
    num_examples = int_key(
        data_config, f"num_{split}", {"train": 20000, "val": 2000, "test": 2000}[split], 0
    )
    h, w = image_size_key(data_config, 32, minimum=8)
    arrays = generate_shapes(seed, split, num_examples, (h, w))
    info = SourceInfo(num_classes=len(CLASS_KINDS), class_names=CLASS_KINDS, image_shape=(h, w, 3))
    return ArraySource(arrays, info)


# --------------------------------------------------------------------------------------------
# Figures.


def save_example_grid(
    path: str,
    images: np.ndarray,
    labels: np.ndarray | Sequence[int],
    class_names: Sequence[str],
    num_cols: int = 8,
    title: str | None = None,
) -> str:
    """Writes a PNG grid of images, each titled with its class name.

    Uses matplotlib's Agg canvas directly (no pyplot), so it works headless and never
    changes the global backend.

    Args:
      path: the PNG file to write.
      images: [n, H, W, 3] uint8 (or [n, H, W] grey).
      labels: [n] integer class ids.
      class_names: names indexed by label.
      num_cols: images per row.
      title: optional figure title.

    Returns:
      `path`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(images)
    num_cols = max(1, min(num_cols, n))
    num_rows = max(1, -(-n // num_cols))
    fig = Figure(figsize=(1.4 * num_cols, 1.55 * num_rows + (0.4 if title else 0.0)))
    FigureCanvasAgg(fig)
    for i in range(num_rows * num_cols):
        ax = fig.add_subplot(num_rows, num_cols, i + 1)
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], cmap="gray" if images[i].ndim == 2 else None)
            ax.set_title(class_names[int(labels[i])], fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path

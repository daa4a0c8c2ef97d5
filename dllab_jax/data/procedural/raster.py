"""The rasteriser of procedural scenes: numpy, vectorised over every object of one kind.

Objects are anti-aliased analytically from signed distance functions (coverage =
clip(0.5 - distance in pixels, 0, 1)); backgrounds are a colour gradient plus low-frequency
blotches and pixel noise. Besides the image, `rasterize` returns a per-pixel map of the
visible object, from which the sources make their masks (`masks.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from dllab_jax.data.checks import example_rng, image_hw
from dllab_jax.data.procedural.scene import Background, Scene, SceneObject

# Side of the coarse grid of random colour offsets that is upsampled into background blotches.
BLOTCH_GRID = 4
# Pixels rendered per rasteriser call: bounds the [objects, H, W] temporaries to ~100 MB.
_PIXELS_PER_CHUNK = 2**20

# Signed distance functions take local coordinates `x, y` (arrays of any
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
    h, w = image_hw(image_size)
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
    h, w = image_hw(image_size)
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
    h, w = image_hw(image_size)
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


def render_scenes(
    scenes: Sequence[Scene], image_size: int | Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Renders scenes in chunks of about `_PIXELS_PER_CHUNK` pixels.

    Returns:
      images: [n, H, W, 3] uint8.
      visible: [n, H, W] int32, as `rasterize` returns it.
    """
    h, w = image_hw(image_size)
    n = len(scenes)
    images = np.empty((n, h, w, 3), np.uint8)
    visible = np.empty((n, h, w), np.int32)
    chunk = max(1, _PIXELS_PER_CHUNK // (h * w))
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        float_images, visible[start:stop] = rasterize(scenes[start:stop], (h, w))
        images[start:stop] = to_uint8(float_images)
    return images, visible


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
    scenes = [sampler(example_rng(seed, split, i)) for i in range(num_examples)]
    images, visible = render_scenes(scenes, image_size)
    return scenes, images, visible

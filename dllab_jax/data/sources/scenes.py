"""`scenes`: procedural segmentation scenes (no download), `image` [n, H, W, 3] uint8 and
`label` [n, H, W] int32 (255 = ignore).

One to several overlapping shapes over a cluttered background, built on the shared scene
model (`procedural/scene.py`) and rasteriser (`procedural/raster.py`). Two label sets
(`data_config.labels`):

* "classes" (the Cityscapes stand-in): 0 background (including the clutter strokes and
  blobs, which are never a class) and 1..10 for the ten `scene.CLASS_KINDS`. Pixels within
  `ignore_band` pixels of a change of class (object/background or object/object
  boundaries, both sides) are 255: the anti-aliased edge pixels mix two colours, as the
  unlabelled outlines of real annotations do. `ignore_band=0` labels every pixel.
* "trimap" (the Oxford-IIIT Pet stand-in): 0 object (any shape of a class kind), 1
  background, 2 border: every pixel whose (2r+1)x(2r+1) window (r = `trimap_border`,
  default 1) holds both object and background pixels, a band of 2r pixels centred on the
  object outline. No ignore pixels.
"""

from __future__ import annotations

import functools

import ml_collections
import numpy as np

from dllab_jax import registry
from dllab_jax.data.base import IGNORE, ArraySource, SourceInfo
from dllab_jax.data.cache import cached_split
from dllab_jax.data.checks import (
    check_split,
    image_size_key,
    int_key,
    size_range_key,
    split_size,
)
from dllab_jax.data.procedural import scene as scene_lib
from dllab_jax.data.procedural.masks import class_maps, label_boundaries, trimap_from_foreground
from dllab_jax.data.procedural.raster import render_split
from dllab_jax.errors import UserError

SCENE_CLASS_NAMES: tuple[str, ...] = ("background", *scene_lib.CLASS_KINDS)
TRIMAP_CLASS_NAMES: tuple[str, ...] = ("object", "background", "border")
SCENE_LABEL_SETS = ("classes", "trimap")
# Circumradius of a shape as a fraction of the image side: 6-19 pixels at 64x64.
DEFAULT_SIZE_RANGE = (0.1, 0.3)


def sample_segmentation_scene(
    rng: np.random.Generator,
    max_objects: int = 4,
    size_range: tuple[float, float] = DEFAULT_SIZE_RANGE,
) -> scene_lib.Scene:
    """A `scenes` example: 1..max_objects shapes of random classes that may overlap.

    Layers, bottom to top: a textured gradient background, 2-4 strokes and 1-3 blobs
    (clutter), the shapes (each contrasting with the background's mean colour, later ones
    occluding earlier ones), and with probability 0.5 one stroke in front.
    """
    background = scene_lib.sample_background(rng)
    mean_bg = 0.5 * (np.asarray(background.rgb0) + np.asarray(background.rgb1))
    behind = scene_lib.sample_distractors(rng, int(rng.integers(2, 5)), int(rng.integers(1, 4)))
    num = int(rng.integers(1, max_objects + 1))
    shapes = []
    for _ in range(num):
        kind = scene_lib.CLASS_KINDS[int(rng.integers(len(scene_lib.CLASS_KINDS)))]
        rgb = scene_lib.contrasting_rgb(rng, mean_bg, 0.35)
        shapes.append(scene_lib.sample_object(rng, kind, rgb, size_range=size_range))
    front = scene_lib.sample_distractors(rng, int(rng.random() < 0.5), 0)
    return scene_lib.Scene(background, (*behind, *shapes, *front))


@cached_split  # in memory and on disk, across runs (dllab_jax/data/cache.py)
def generate_scenes(
    seed: int,
    split: str,
    num_examples: int,
    image_size: tuple[int, int],
    max_objects: int,
    size_range: tuple[float, float] = DEFAULT_SIZE_RANGE,
) -> dict[str, np.ndarray]:
    """Images and class maps (no ignore) of `scenes` examples 0..n-1, cached, read-only."""
    sampler = functools.partial(
        sample_segmentation_scene, max_objects=max_objects, size_range=size_range
    )
    scenes, images, visible = render_split(sampler, seed, split, num_examples, image_size)
    classes = class_maps(scenes, visible) if num_examples else visible
    images.setflags(write=False)
    classes.setflags(write=False)
    return {"image": images, "classes": classes}


def scene_labels(classes: np.ndarray, labels: str, ignore_band: int, trimap_border: int):
    """Labels of one label set from class maps [n, H, W] (see the module docstring)."""
    if labels == "classes":
        out = classes.astype(np.int32, copy=True)
        out[label_boundaries(classes, ignore_band)] = IGNORE
        return out
    if labels == "trimap":
        return trimap_from_foreground(classes > 0, trimap_border)
    raise UserError(f"config.data.labels must be one of {SCENE_LABEL_SETS}, got {labels!r}")


@registry.data_sources.register("scenes")
def make_scenes(data_config: ml_collections.ConfigDict, split: str) -> ArraySource:
    """The procedural `scenes` segmentation source.

    Reads `seed` (0), `image_size` (64), `num_train` / `num_val` / `num_test`
    (10000 / 1000 / 1000), `labels` ('classes' or 'trimap'), `max_objects` (4), `size_range`
    ((0.1, 0.3): the shapes' circumradius as a fraction of the image side, uniform),
    `ignore_band` (1; classes only) and `trimap_border` (1; trimap only).
    """
    check_split("scenes", split)
    seed = int_key(data_config, "seed", 0, 0)
    num = split_size(data_config, split, {"train": 10000, "val": 1000, "test": 1000})
    h, w = image_size_key(data_config, 64, minimum=8)
    max_objects = int_key(data_config, "max_objects", 4, 1)
    size_range = size_range_key(data_config, DEFAULT_SIZE_RANGE)
    ignore_band = int_key(data_config, "ignore_band", 1, 0)
    trimap_border = int_key(data_config, "trimap_border", 1, 0)
    labels = data_config.get("labels", "classes")
    if labels not in SCENE_LABEL_SETS:
        raise UserError(f"config.data.labels must be one of {SCENE_LABEL_SETS}, got {labels!r}")
    arrays = generate_scenes(seed, split, num, (h, w), max_objects, size_range)
    label = scene_labels(arrays["classes"], labels, ignore_band, trimap_border)
    names = SCENE_CLASS_NAMES if labels == "classes" else TRIMAP_CLASS_NAMES
    info = SourceInfo(num_classes=len(names), class_names=names, image_shape=(h, w, 3))
    return ArraySource({"image": arrays["image"], "label": label}, info)

"""`shapes`: the offline default of the image-classification experiment (no download).

One of ten shape classes (`procedural/scene.py`'s `CLASS_KINDS`) per image, with random
colour, position, scale and rotation, on a cluttered background (colour gradient,
low-frequency colour blotches, pixel noise, distractor strokes and elongated blobs that are
not one of the classes), rendered by the shared rasteriser.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from dllab_jax import registry
from dllab_jax.data.base import ArraySource, SourceInfo
from dllab_jax.data.cache import cached_split
from dllab_jax.data.checks import check_split, image_size_key, int_key, split_size
from dllab_jax.data.procedural.raster import render_split
from dllab_jax.data.procedural.scene import (
    CLASS_KINDS,
    Scene,
    random_rgb,
    sample_background,
    sample_distractors,
    sample_object,
)


def class_label(scene: Scene) -> int:
    """The class of a single-object classification scene: the index of its one class kind."""
    labels = [CLASS_KINDS.index(o.kind) for o in scene.objects if o.kind in CLASS_KINDS]
    if len(labels) != 1:
        raise ValueError(f"expected exactly one object of a class kind, got {len(labels)}")
    return labels[0]


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


@cached_split  # in memory and on disk, across runs (dllab_jax/data/cache.py)
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


@registry.data_sources.register("shapes")
def make_shapes(data_config: ml_collections.ConfigDict, split: str) -> ArraySource:
    """The `shapes` source for `split` ('train', 'val' or 'test').

    Reads `data_config.seed` (default 0), `image_size` (int or (H, W), default 32) and
    `num_train` / `num_val` / `num_test` (defaults 20000 / 2000 / 2000).
    """
    check_split("shapes", split)
    seed = int_key(data_config, "seed", 0, 0)
    num_examples = split_size(data_config, split, {"train": 20000, "val": 2000, "test": 2000})
    h, w = image_size_key(data_config, 32, minimum=8)
    arrays = generate_shapes(seed, split, num_examples, (h, w))
    info = SourceInfo(num_classes=len(CLASS_KINDS), class_names=CLASS_KINDS, image_shape=(h, w, 3))
    return ArraySource(arrays, info)

"""`captioned_shapes`: offline, procedural images with captions (retrieval E7, captioning E6).

Scenes of one to three shapes with a named colour, a size and a position on a dark, mildly
cluttered background (`procedural/caption_scenes.py`), rendered with the shared rasteriser,
each with K distinct paraphrased captions generated from the scene
(`procedural/caption_grammar.py`: attributes, spatial relations, absolute positions). About
half of the examples come in near-duplicate pairs (`procedural/caption_examples.py`): the
second scene is the first with two objects' colours, sizes or positions swapped, so a model
must bind attributes and relations to tell them apart.

The source's `text_corpus()` is its captions, for a tokenizer to learn from.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from dllab_jax import registry
from dllab_jax.data.base import CaptionArraySource, SourceInfo
from dllab_jax.data.cache import cached_split
from dllab_jax.data.checks import check_split, image_size_key, int_key, split_size
from dllab_jax.data.procedural.caption_examples import sample_examples
from dllab_jax.data.procedural.caption_grammar import MAX_CAPTIONS_PER_IMAGE
from dllab_jax.data.procedural.raster import render_scenes
from dllab_jax.data.readers.caption_files import captions_array
from dllab_jax.errors import UserError

SPLIT_SIZES = {"train": 20000, "val": 1000, "test": 1000}


@cached_split  # in memory and on disk, across runs (dllab_jax/data/cache.py)
def generate_captioned_shapes(
    seed: int,
    split: str,
    num_examples: int,
    image_size: tuple[int, int],
    num_captions: int,
    swap_fraction: float,
) -> dict[str, np.ndarray]:
    """The `captioned_shapes` examples 0..num_examples-1 of `split`, cached for the process.

    Returns:
      {'image': [n, H, W, 3] uint8, 'captions': [n, num_captions] object (str)}, read-only.
    """
    examples = sample_examples(seed, split, range(num_examples), num_captions, swap_fraction)
    images, _ = render_scenes([e.scene.to_scene() for e in examples], image_size)
    captions = captions_array([e.captions for e in examples], num_captions)
    images.setflags(write=False)
    captions.setflags(write=False)
    return {"image": images, "captions": captions}


def _settings(data_config: ml_collections.ConfigDict) -> tuple[int, int, float]:
    """(seed, captions per image, swap fraction) of `captioned_shapes`, validated."""
    seed = int_key(data_config, "seed", 0, 0)
    num_captions = int_key(data_config, "captions_per_image", 5, 1)
    if num_captions > MAX_CAPTIONS_PER_IMAGE:
        raise UserError(
            f"config.data.captions_per_image must be at most {MAX_CAPTIONS_PER_IMAGE} for "
            f"captioned_shapes, got {num_captions}"
        )
    swap_fraction = data_config.get("swap_fraction", 0.5)
    if isinstance(swap_fraction, bool) or not (
        isinstance(swap_fraction, int | float) and 0.0 <= swap_fraction <= 1.0
    ):
        raise UserError(f"config.data.swap_fraction must be in [0, 1], got {swap_fraction!r}")
    return seed, num_captions, float(swap_fraction)


def data_config(**overrides) -> ml_collections.ConfigDict:
    """`config.data` for this source, every key spelled out (so a run's config.json records
    them) at the defaults `make_captioned_shapes` documents, with `overrides` (e.g. the
    pipeline's `mean` and `std`): the retrieval and captioning configs share it."""
    defaults = dict(
        name="captioned_shapes",
        seed=0,
        num_train=SPLIT_SIZES["train"],
        num_val=SPLIT_SIZES["val"],
        num_test=SPLIT_SIZES["test"],
        image_size=32,
        captions_per_image=5,  # paraphrases per image
        swap_fraction=0.5,  # share of images paired with an attribute-swapped twin
    )
    return ml_collections.ConfigDict({**defaults, **overrides})


@registry.data_sources.register("captioned_shapes")
def make_captioned_shapes(data_config: ml_collections.ConfigDict, split: str) -> CaptionArraySource:
    """The `captioned_shapes` source for `split` ('train', 'val' or 'test').

    Reads `data_config.seed` (default 0), `image_size` (int or (H, W), default 32),
    `num_train` / `num_val` / `num_test` (defaults 20000 / 1000 / 1000),
    `captions_per_image` (K, default 5, at most 10) and `swap_fraction` (default 0.5: the
    fraction of index pairs (2p, 2p + 1) whose second image is the first with two objects'
    colours, positions or sizes swapped).

    `get` returns {'image': [n, H, W, 3] uint8, 'captions': [n, K] object (str)}.
    """
    check_split("captioned_shapes", split)
    seed, num_captions, swap_fraction = _settings(data_config)
    num_examples = split_size(data_config, split, SPLIT_SIZES)
    image_size = image_size_key(data_config, 32, minimum=8)
    arrays = generate_captioned_shapes(
        seed, split, num_examples, image_size, num_captions, swap_fraction
    )
    return CaptionArraySource(arrays, SourceInfo(0, (), (*image_size, 3)))

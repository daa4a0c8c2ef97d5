"""`concepts`: the procedural concept images of the diffusion exercise (offline).

One coloured shape on black, three binary concepts (`procedural/concept_codes.py`), sampled
and rendered by `procedural/concept_images.py`. Example i of a split is a pure function of
(seed, split, i, its code), so it never depends on the split's size.

`concepts` (procedural, offline). Config keys (`config.data.*`):

- `seed` (0); `image_size` (28: an int or (H, W)); `supersample` (4);
- `num_train` / `num_val` / `num_test` (5000 / 800 / 800): examples in the split, over all of
  its codes;
- `codes`: a tuple of code strings (or one string '000,011,...') used by every split;
- `train_codes` (split 'train') and `eval_codes` (splits 'val' and 'test'): per-split
  overrides that win over `codes`. Defaults: `SEEN_CODES` for train, `ALL_CODES` for val/test.

Codes are assigned round-robin in the order given: example i gets codes[i % len(codes)], so
every code has the same number of examples (+-1) and a prefix of a split is balanced too.

`get` returns the arrays of `concept_codes.concept_arrays`.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from dllab_jax import registry
from dllab_jax.data.base import ArraySource
from dllab_jax.data.cache import cached_split
from dllab_jax.data.checks import check_split, image_size_key, int_key, split_size
from dllab_jax.data.procedural.concept_codes import (
    REFERENCE_SIZE,
    code_index,
    concept_arrays,
    concept_info,
    split_codes,
)
from dllab_jax.data.procedural.concept_images import (
    SUPERSAMPLE,
    concept_rng,
    render_concept_images,
    sample_concepts,
)
from dllab_jax.data.procedural.raster import to_uint8

NUM_EXAMPLES = {"train": 5000, "val": 800, "test": 800}


@cached_split  # in memory and on disk, across runs (dllab_jax/data/cache.py)
def generate_concepts(
    seed: int,
    split: str,
    num_examples: int,
    image_size: tuple[int, int],
    codes: tuple[str, ...],
    supersample: int = SUPERSAMPLE,
) -> dict[str, np.ndarray]:
    """Examples 0..n-1 of a split (example i has codes[i % len(codes)]), cached, read-only."""
    h, w = image_size
    samples = []
    for i in range(num_examples):
        code = codes[i % len(codes)]
        samples.append(sample_concepts(concept_rng(seed, split, i, code), code, (h, w)))
    shape = np.array([c["shape"] for c in samples], np.int32)
    colour = np.array([c["colour"] for c in samples], np.float32).reshape(-1, 3)
    size_px = np.array([c["size"] for c in samples], np.float64)
    center_px = np.array([c["center"] for c in samples], np.float64).reshape(-1, 2)
    images = to_uint8(render_concept_images(shape, colour, size_px, center_px, (h, w), supersample))
    arrays = concept_arrays(
        images,
        np.array([code_index(c["code"]) for c in samples], np.int32),
        colour,
        size_px / (min(h, w) / 2.0),
        center_px / np.array([w, h], np.float64),
    )
    for array in arrays.values():
        array.setflags(write=False)
    return arrays


@registry.data_sources.register("concepts")
def make_concepts(data_config: ml_collections.ConfigDict, split: str) -> ArraySource:
    """The procedural concept source for `split` ('train', 'val' or 'test').

    Reads `seed` (0), `image_size` (28), `supersample` (4), `num_train` / `num_val` /
    `num_test` (5000 / 800 / 800) and `codes` / `train_codes` / `eval_codes` (see the module
    docstring).
    """
    check_split("concepts", split)
    seed = int_key(data_config, "seed", 0, 0)
    num = split_size(data_config, split, NUM_EXAMPLES)
    h, w = image_size_key(data_config, REFERENCE_SIZE, minimum=8)
    supersample = int_key(data_config, "supersample", SUPERSAMPLE, 1)
    codes = split_codes(data_config, split)
    arrays = generate_concepts(seed, split, num, (h, w), codes, supersample)
    return ArraySource(arrays, concept_info((h, w)))

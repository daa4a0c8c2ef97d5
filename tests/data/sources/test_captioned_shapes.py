"""The `captioned_shapes` source (dllab_jax/data/sources/captioned_shapes.py) and its text
corpus. CPU only, offline."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from dllab_jax import data
from dllab_jax.data import get_source
from dllab_jax.data.procedural import caption_examples
from dllab_jax.data.sources import captioned_shapes
from dllab_jax.errors import UserError


def shapes_config(**overrides) -> ml_collections.ConfigDict:
    values = dict(name="captioned_shapes", seed=0, image_size=32, num_train=200, num_val=40)
    values.update(overrides)
    return ml_collections.ConfigDict(values)


def test_captioned_shapes_shapes_dtypes_and_sizes():
    source = get_source(shapes_config(), "train")
    batch = source.get(np.arange(len(source)))
    assert len(source) == 200
    assert batch["image"].shape == (200, 32, 32, 3) and batch["image"].dtype == np.uint8
    assert batch["captions"].shape == (200, 5) and batch["captions"].dtype == object
    assert all(isinstance(c, str) and c for c in batch["captions"].reshape(-1))
    assert source.info.image_shape == (32, 32, 3) and source.info.num_classes == 0
    # Other sizes: captions do not depend on the resolution.
    big = get_source(shapes_config(image_size=64, num_val=6), "val").get([0, 5])
    small = get_source(shapes_config(num_val=6), "val").get([0, 5])
    assert big["image"].shape == (2, 64, 64, 3)
    np.testing.assert_array_equal(big["captions"], small["captions"])
    three = get_source(shapes_config(captions_per_image=3, num_val=6), "val").get([0, 1])
    assert three["captions"].shape == (2, 3)


def test_captioned_shapes_deterministic_and_independent_of_split_size():
    generate = captioned_shapes.generate_captioned_shapes.__wrapped__  # bypass the process cache
    a = generate(3, "train", 24, (32, 32), 5, 0.5)
    b = generate(3, "train", 24, (32, 32), 5, 0.5)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["captions"], b["captions"])
    # Example i is the same whatever the split size (odd sizes cut a swap pair).
    small = get_source(shapes_config(seed=3, num_train=11), "train").get(np.arange(11))
    np.testing.assert_array_equal(small["image"], a["image"][:11])
    np.testing.assert_array_equal(small["captions"], a["captions"][:11])
    # Random access agrees with in-order generation.
    picked = caption_examples.sample_examples(3, "train", [7, 2, 13], 5, 0.5)
    assert [e.captions for e in picked] == [tuple(a["captions"][i]) for i in (7, 2, 13)]
    # Splits and seeds draw different examples.
    val = generate(3, "val", 24, (32, 32), 5, 0.5)
    other = generate(4, "train", 24, (32, 32), 5, 0.5)
    assert not np.array_equal(val["image"], a["image"])
    assert not np.array_equal(other["captions"], a["captions"])


def test_text_corpus_and_bad_config():
    config = shapes_config(num_train=30)
    corpus = data.text_corpus(config)
    source_captions = get_source(config, "train").get(np.arange(30))["captions"]
    assert corpus == list(source_captions.reshape(-1))
    with pytest.raises(UserError, match="captions_per_image"):
        get_source(shapes_config(captions_per_image=11), "train")
    with pytest.raises(UserError, match="swap_fraction"):
        get_source(shapes_config(swap_fraction=1.5), "train")
    with pytest.raises(UserError, match="unknown split"):
        get_source(shapes_config(), "holdout")
    with pytest.raises(UserError, match="has no texts to train a tokenizer on"):
        data.text_corpus(ml_collections.ConfigDict(dict(name="shapes", num_train=4)))

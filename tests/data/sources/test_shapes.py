"""The `shapes` source (dllab_jax/data/sources/shapes.py). CPU only, offline."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from dllab_jax.data import checks, get_source
from dllab_jax.data.procedural import raster
from dllab_jax.data.procedural.scene import CLASS_KINDS
from dllab_jax.data.sources import shapes
from dllab_jax.errors import UserError


def shapes_config(**overrides) -> ml_collections.ConfigDict:
    values = dict(name="shapes", seed=0, image_size=32, num_train=300, num_val=40, num_test=40)
    values.update(overrides)
    return ml_collections.ConfigDict(values)


def test_shapes_shapes_dtypes_and_classes():
    source = get_source(shapes_config(), "train")
    batch = source.get(np.arange(len(source)))
    assert len(source) == 300
    assert batch["image"].shape == (300, 32, 32, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (300,) and batch["label"].dtype == np.int32
    assert source.info.num_classes == 10
    assert source.info.class_names == CLASS_KINDS
    assert source.info.image_shape == (32, 32, 3)
    # Uniform labels: all ten classes turn up among 300 examples.
    assert set(batch["label"].tolist()) == set(range(10))


def test_shapes_deterministic_and_independent_of_split_size():
    generate = shapes.generate_shapes.__wrapped__  # bypass the process cache
    a = generate(3, "train", 24, (32, 32))
    b = generate(3, "train", 24, (32, 32))
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
    # Example i is the same whatever the split size.
    small = get_source(shapes_config(seed=3, num_train=10), "train").get(np.arange(10))
    np.testing.assert_array_equal(small["image"], a["image"][:10])
    np.testing.assert_array_equal(small["label"], a["label"][:10])
    # Splits and seeds draw different examples.
    val = generate(3, "val", 24, (32, 32))
    other_seed = generate(4, "train", 24, (32, 32))
    assert not np.array_equal(val["image"], a["image"])
    assert not np.array_equal(other_seed["image"], a["image"])


def test_shapes_image_size_and_bad_config():
    source = get_source(shapes_config(image_size=20, num_val=5), "val")
    assert source.get([0, 4])["image"].shape == (2, 20, 20, 3)
    assert source.info.image_shape == (20, 20, 3)
    with pytest.raises(UserError, match="unknown split"):
        get_source(shapes_config(), "validation")
    with pytest.raises(UserError, match="num_test"):
        get_source(shapes_config(num_test=-1), "test")
    with pytest.raises(UserError, match="image_size"):
        get_source(shapes_config(image_size=4), "test")


def test_shapes_labels_match_scene_kinds():
    """The label is the class of the one non-distractor object, which is drawn at its size."""
    rng = checks.example_rng(0, "train", 7)
    scene = shapes.sample_shapes_scene(rng)
    kinds = [o.kind for o in scene.objects]
    targets = [k for k in kinds if k in CLASS_KINDS]
    assert len(targets) == 1
    assert shapes.class_label(scene) == CLASS_KINDS.index(targets[0])
    _, visible = raster.rasterize([scene], 32)
    target_index = kinds.index(targets[0])
    assert (visible[0] == target_index).sum() > 20  # the object is visible, not hidden

"""The procedural segmentation source `scenes` (dllab_jax/data/sources/scenes.py). CPU,
offline."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from dllab_jax.data import get_source
from dllab_jax.data.procedural import masks
from dllab_jax.errors import UserError


def scenes_config(**overrides) -> ml_collections.ConfigDict:
    values = dict(name="scenes", seed=0, image_size=64, num_train=64, num_val=16, num_test=16)
    values.update(overrides)
    return ml_collections.ConfigDict(values)


def _all(source):
    return source.get(np.arange(len(source)))


def test_scenes_shapes_dtypes_and_ranges():
    source = get_source(scenes_config(), "train")
    batch = _all(source)
    assert len(source) == 64
    assert batch["image"].shape == (64, 64, 64, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (64, 64, 64) and batch["label"].dtype == np.int32
    assert source.info.num_classes == 11 == len(source.info.class_names)
    assert source.info.class_names[0] == "background"
    values = set(np.unique(batch["label"]).tolist())
    assert values <= set(range(11)) | {255}
    assert 255 in values and 0 in values and len(values - {0, 255}) >= 8
    # Several objects per image, on average.
    per_image = [len(set(np.unique(lab).tolist()) - {0, 255}) for lab in batch["label"]]
    assert max(per_image) >= 3


def test_scenes_deterministic_and_split_independent():
    a = _all(get_source(scenes_config(), "val"))
    b = _all(get_source(scenes_config(num_val=8), "val"))
    np.testing.assert_array_equal(a["image"][:8], b["image"])
    np.testing.assert_array_equal(a["label"][:8], b["label"])
    c = _all(get_source(scenes_config(seed=1), "val"))
    t = _all(get_source(scenes_config(), "test"))
    assert not np.array_equal(a["image"], c["image"])
    assert not np.array_equal(a["image"], t["image"])
    # get returns copies: writing to them does not touch the cache.
    a["label"][:] = 7
    again = _all(get_source(scenes_config(), "val"))
    np.testing.assert_array_equal(again["label"][:8], b["label"])


def test_scenes_trimap_consistent_with_classes():
    classes_src = get_source(scenes_config(), "train")
    trimap_src = get_source(scenes_config(labels="trimap"), "train")
    classes = _all(classes_src)
    trimap = _all(trimap_src)
    np.testing.assert_array_equal(classes["image"], trimap["image"])
    assert trimap_src.info.class_names == ("object", "background", "border")
    t, c = trimap["label"], classes["label"]
    assert set(np.unique(t).tolist()) == {0, 1, 2}
    # Object pixels are never background in classes mode; background pixels are never an
    # object class (either may be ignore in classes mode).
    assert np.all(c[t == 0] != 0)
    assert np.all(np.isin(c[t == 1], [0, 255]))
    # Without the ignore band, the classes' foreground is exactly trimap object + the object
    # half of the border.
    raw = _all(get_source(scenes_config(ignore_band=0), "train"))["label"]
    assert 255 not in raw
    np.testing.assert_array_equal(masks.trimap_from_foreground(raw > 0, 1), t)
    assert np.all(c[c != 255] == raw[c != 255])


def test_scenes_bad_config():
    with pytest.raises(UserError, match="labels"):
        get_source(scenes_config(labels="pets"), "train")
    with pytest.raises(UserError, match="unknown split"):
        get_source(scenes_config(), "valid")
    with pytest.raises(UserError, match="size_range"):
        get_source(scenes_config(size_range=(0.3, 0.1)), "train")
    with pytest.raises(UserError, match="size_range"):
        get_source(scenes_config(size_range="big"), "train")


def test_scenes_size_range_scales_the_shapes():
    """Larger circumradii cover more pixels; one object per image keeps the count exact."""
    small = _all(get_source(scenes_config(max_objects=1, ignore_band=0), "train"))["label"]
    big = _all(
        get_source(scenes_config(max_objects=1, ignore_band=0, size_range=(0.3, 0.4)), "train")
    )["label"]
    small_area = (small > 0).mean(axis=(1, 2))
    big_area = (big > 0).mean(axis=(1, 2))
    # A circumradius r covers at most pi r^2 of the image: (0.3, 0.4) gives <= 0.50, the
    # default (0.1, 0.3) <= 0.28; the smallest class shape (the cross) fills well above a
    # tenth of its circle.
    assert small_area.max() <= np.pi * 0.3**2 + 0.01
    assert big_area.max() <= np.pi * 0.4**2 + 0.01
    assert np.median(big_area) > 2.0 * np.median(small_area)
    assert big_area.min() > 0.1 * np.pi * 0.3**2 * 0.9

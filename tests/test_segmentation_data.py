"""Tests of the segmentation sources (scenes, oxford_iiit_pet, cityscapes, carla). CPU, offline."""

from __future__ import annotations

import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from dllab_jax.data import get_source, segmentation
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
    np.testing.assert_array_equal(segmentation.trimap_from_foreground(raw > 0, 1), t)
    assert np.all(c[c != 255] == raw[c != 255])


def test_trimap_border_hand_made():
    fg = np.zeros((8, 8), bool)
    fg[2:6, 2:6] = True
    trimap = segmentation.trimap_from_foreground(fg, 1)
    expected = np.ones((8, 8), np.int32)
    expected[1:7, 1:7] = 2  # one pixel on each side of the outline
    expected[3:5, 3:5] = 0
    np.testing.assert_array_equal(trimap, expected)
    wide = segmentation.trimap_from_foreground(fg, 2)
    assert np.all(wide == 2)  # a 4-pixel band swallows the 4x4 square and its 2-pixel frame
    # The ignore band of class maps marks both sides of every change of label.
    labels = np.zeros((6, 6), np.int32)
    labels[:, 3:] = 4
    edge = segmentation.label_boundaries(labels, 1)
    assert edge[:, 2:4].all() and not edge[:, :2].any() and not edge[:, 4:].any()


def test_scenes_bad_config():
    with pytest.raises(UserError, match="labels"):
        get_source(scenes_config(labels="pets"), "train")
    with pytest.raises(UserError, match="unknown split"):
        get_source(scenes_config(), "valid")


# ------------------------------------------------------------------------------------------
# CARLA


def _write_carla(root, names_per_folder, size=(12, 16)):
    h, w = size
    rng = np.random.default_rng(0)
    for folder, names in names_per_folder.items():
        os.makedirs(os.path.join(root, folder, "CameraRGB"))
        os.makedirs(os.path.join(root, folder, "CameraSeg"))
        for name in names:
            rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            seg = np.zeros((h, w, 3), np.uint8)
            seg[..., 0] = rng.integers(0, 13, (h, w))
            seg[0, 0, 0] = 200  # not a class -> ignore
            seg[..., 1] = 77  # other channels are ignored
            Image.fromarray(rgb).save(os.path.join(root, folder, "CameraRGB", name))
            Image.fromarray(seg).save(os.path.join(root, folder, "CameraSeg", name))


def test_carla_folder(tmp_path):
    root = str(tmp_path)
    _write_carla(root, {"dataA": ["a0.png", "a1.png", "c0.png"], "dataB": ["b0.png", "b1.png"]})
    cfg = ml_collections.ConfigDict(
        dict(name="carla", root=root, image_size=(12, 16), num_val=1, num_test=1)
    )
    sources = {s: get_source(cfg, s) for s in ("train", "val", "test")}
    assert [len(sources[s]) for s in ("train", "val", "test")] == [3, 1, 1]
    names = [os.path.basename(p[0]) for s in ("train", "val", "test") for p in sources[s].pairs]
    assert names == ["a0.png", "a1.png", "b0.png", "b1.png", "c0.png"]
    batch = _all(sources["train"])
    assert batch["image"].shape == (3, 12, 16, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (3, 12, 16) and batch["label"].dtype == np.int32
    seg = np.asarray(Image.open(os.path.join(root, "dataA", "CameraSeg", "a0.png")))
    expected = seg[..., 0].astype(np.int32)
    expected[expected >= 13] = 255
    np.testing.assert_array_equal(batch["label"][0], expected)
    assert sources["train"].info.num_classes == 13
    # Resizing: masks nearest, values stay class ids.
    small = get_source(
        ml_collections.ConfigDict(
            dict(name="carla", root=root, image_size=(5, 7), num_val=1, num_test=1)
        ),
        "val",
    )
    lab = _all(small)["label"]
    assert lab.shape == (1, 5, 7) and set(np.unique(lab).tolist()) <= set(range(13)) | {255}


def test_carla_missing_or_empty(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(UserError, match="nope"):
        get_source(ml_collections.ConfigDict(dict(name="carla", root=missing)), "train")
    with pytest.raises(UserError, match="no image/mask pairs"):
        get_source(ml_collections.ConfigDict(dict(name="carla", root=str(tmp_path))), "train")
    _write_carla(str(tmp_path), {"dataA": ["a0.png"]})
    with pytest.raises(UserError, match="num_val"):
        get_source(ml_collections.ConfigDict(dict(name="carla", root=str(tmp_path))), "train")


# ------------------------------------------------------------------------------------------
# tfds sources


def test_cityscapes_id_mapping_hand_made():
    ids = np.array([[0, 7, 8, 11], [24, 26, 33, 34], [-1, 255, 9, 23]])
    expected = np.array([[255, 0, 1, 2], [11, 13, 18, 255], [255, 255, 255, 10]])
    np.testing.assert_array_equal(segmentation.cityscapes_train_ids(ids), expected)
    assert len(segmentation.CITYSCAPES_CLASS_NAMES) == 19
    assert sorted(segmentation.CITYSCAPES_ID_TO_TRAIN_ID.values()) == list(range(19))


def test_resize_nearest_keeps_values():
    label = np.arange(12).reshape(3, 4)
    up = segmentation.resize_nearest(label, (6, 8))
    np.testing.assert_array_equal(up[::2, ::2], label)
    assert set(np.unique(segmentation.resize_nearest(label, (2, 2))).tolist()) <= set(range(12))


def test_oxford_iiit_pet_under_mock_data():
    import tensorflow_datasets as tfds

    cfg = ml_collections.ConfigDict(dict(name="oxford_iiit_pet", image_size=64))
    with tfds.testing.mock_data(num_examples=4):
        source = get_source(cfg, "train")
    batch = _all(source)
    assert batch["image"].shape == (4, 64, 64, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (4, 64, 64) and batch["label"].dtype == np.int32
    assert set(np.unique(batch["label"]).tolist()) <= {0, 1, 2, 255}
    assert source.info.class_names == ("pet", "background", "border")
    # The trimap mapping itself: 1 pet -> 0, 2 background -> 1, 3 border -> 2.
    fn = segmentation.pet_example_fn((2, 2))
    out = fn(
        {
            "image": np.zeros((4, 4, 3), np.uint8),
            "segmentation_mask": np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 0, 0], [3, 3, 0, 0]])[
                ..., None
            ],
        }
    )
    np.testing.assert_array_equal(out["label"], [[0, 1], [2, 255]])


def test_cityscapes_not_prepared_is_a_user_error(tmp_path):
    cfg = ml_collections.ConfigDict(dict(name="cityscapes", data_dir=str(tmp_path)))
    with pytest.raises(UserError, match="manual_dir"):
        get_source(cfg, "train")


def test_cityscapes_under_mock_data():
    import tensorflow_datasets as tfds

    cfg = ml_collections.ConfigDict(dict(name="cityscapes", image_size=64))
    with tfds.testing.mock_data(num_examples=2):
        source = get_source(cfg, "val")
    batch = _all(source)
    assert batch["image"].shape == (2, 64, 64, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (2, 64, 64) and batch["label"].dtype == np.int32
    assert set(np.unique(batch["label"]).tolist()) <= set(range(19)) | {255}
    assert source.info.num_classes == 19

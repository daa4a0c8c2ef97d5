"""The CARLA folders (dllab_jax/data/sources/carla.py): layout, splits, resizing, and a mask of
another size is an error."""

import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from dllab_jax.data import get_source
from dllab_jax.errors import UserError


def _all(source):
    return source.get(np.arange(len(source)))


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


def test_a_carla_mask_of_another_size_is_an_error(tmp_path):
    _write_carla(str(tmp_path), {"dataA": ["a0.png", "a1.png", "a2.png"]})
    mask = tmp_path / "dataA" / "CameraSeg" / "a1.png"
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(mask)
    config = ml_collections.ConfigDict(
        dict(name="carla", root=str(tmp_path), image_size=(12, 16), num_val=0, num_test=0)
    )
    source = get_source(config, "train")
    assert source.get([0])["label"].shape == (1, 12, 16)
    with pytest.raises(UserError, match=r"a1.png is 6x8 pixels but its image .* is 12x16"):
        source.get([1])

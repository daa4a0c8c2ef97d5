"""The VOC segmentation handout's train augmentation (dllab_jax/data/voc_augment.py), on
padded batches read from a tiny VOC folder (tests/voc_stand_in.py)."""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from voc_stand_in import write_voc

from dllab_jax.data import get_source, voc_augment
from dllab_jax.data.pipeline import train_batches


def config(root, **overrides) -> ml_collections.ConfigDict:
    values = dict(name="voc_segmentation", root=str(root), pad_size=64)
    values.update(overrides)
    return ml_collections.ConfigDict(values)


# A colour per class (and for 255) far from every other, so image pixels say their class.
CLASS_RGB = np.random.default_rng(1).integers(0, 256, (256, 3)).astype(np.uint8)


def coloured_batch(tmp_path, pad_size=64):
    """The train split as read, with each image replaced by its label's class colours
    (padding stays 0), so the augmentation's image/label alignment can be checked."""
    root, _ = write_voc(tmp_path)
    batch = get_source(config(root, pad_size=pad_size), "train").get([0, 1, 2])
    inside = np.arange(pad_size)
    valid = (inside[None, :, None] < batch["height"][:, None, None]) & (
        inside[None, None, :] < batch["width"][:, None, None]
    )
    batch["image"] = np.where(valid[..., None], CLASS_RGB[batch["label"]], 0).astype(np.uint8)
    batch["id"] = np.array(["a", "b", "c"])
    return batch


def uniform_windows(label: np.ndarray, radius: int) -> np.ndarray:
    """[H, W] bool: the (2r+1)^2 window around the pixel has one value and lies inside the
    array (what lies beyond a crop's edge is unknown)."""
    padded = np.pad(label, radius, constant_values=-1)
    window = (2 * radius + 1, 2 * radius + 1)
    views = sliding_window_view(padded, window)
    return views.max(axis=(-1, -2)) == views.min(axis=(-1, -2))


def test_train_augment_shapes_alignment_and_values(tmp_path):
    batch = coloured_batch(tmp_path)
    augment = voc_augment.voc_train_augment()
    out = augment(batch, np.random.default_rng(0))
    assert out["image"].shape == (3, 256, 256, 3) and out["image"].dtype == np.uint8
    assert out["label"].shape == (3, 256, 256) and out["label"].dtype == np.int32
    np.testing.assert_array_equal(out["height"], [256] * 3)
    np.testing.assert_array_equal(out["width"], [256] * 3)
    assert out["height"].dtype == np.int32
    np.testing.assert_array_equal(out["id"], batch["id"])  # other keys pass through
    assert batch["image"].shape == (3, 64, 64, 3)  # the input is not modified

    for k in range(3):
        h, w = batch["height"][k], batch["width"][k]
        values_in = set(np.unique(batch["label"][k, :h, :w]).tolist())
        values_out = set(np.unique(out["label"][k]).tolist())
        # Nearest resizing invents no class; no padding of the batch leaks in (its 255 is
        # in the input set anyway, but a 0-filled image would break the colours below).
        assert values_out <= values_in | {255}
        assert len(values_out - {255}) >= 2
        # Upscaled ~6-8x: pixels whose 17x17 window has one class sit far enough from any
        # edge that bilinear blending cannot reach them; their colour is their class's.
        interior = uniform_windows(out["label"][k], 8) & (out["label"][k] != 255)
        assert interior.mean() > 0.3
        np.testing.assert_array_equal(
            out["image"][k][interior], CLASS_RGB[out["label"][k][interior]]
        )


def test_train_augment_short_side_and_params(tmp_path):
    shorts = []
    for seed in range(400):
        params = voc_augment.sample_train_params(40, 56, np.random.default_rng(seed))
        assert 256 <= params.short_side <= 300
        assert params.resized == (params.short_side, int(params.short_side * 56 / 40))
        assert params.pad == (0, 0) and params.crop_size == 256
        assert 0 <= params.top <= params.resized[0] - 256
        assert 0 <= params.left <= params.resized[1] - 256
        shorts.append(params.short_side)
    assert min(shorts) == 256 and max(shorts) == 300  # inclusive range
    assert voc_augment.resized_size(64, 48, 280) == (int(280 * 64 / 48), 280)  # portrait
    assert voc_augment.resized_size(32, 32, 257) == (257, 257)
    flips = [
        voc_augment.sample_train_params(32, 32, np.random.default_rng(s)).flip for s in range(400)
    ]
    assert 120 < sum(flips) < 280
    no_flip = [
        voc_augment.sample_train_params(32, 32, np.random.default_rng(s), hflip=False).flip
        for s in range(50)
    ]
    assert not any(no_flip)

    # The augmentation is these parameters, drawn example by example from the one generator.
    batch = coloured_batch(tmp_path)
    out = voc_augment.voc_train_augment()(batch, np.random.default_rng(7))
    rng = np.random.default_rng(7)
    for k in range(3):
        h, w = batch["height"][k], batch["width"][k]
        params = voc_augment.sample_train_params(h, w, rng)
        image, label = voc_augment.apply_train_params(
            batch["image"][k, :h, :w], batch["label"][k, :h, :w], params
        )
        np.testing.assert_array_equal(out["image"][k], image)
        np.testing.assert_array_equal(out["label"][k], label)


def test_train_augment_flip_consistency_and_determinism(tmp_path):
    batch = coloured_batch(tmp_path)
    h, w = batch["height"][0], batch["width"][0]
    image, label = batch["image"][0, :h, :w], batch["label"][0, :h, :w]
    params = voc_augment.sample_train_params(h, w, np.random.default_rng(3))
    plain = voc_augment.apply_train_params(image, label, dataclasses.replace(params, flip=False))
    flipped = voc_augment.apply_train_params(image, label, dataclasses.replace(params, flip=True))
    np.testing.assert_array_equal(flipped[0], plain[0][:, ::-1])
    np.testing.assert_array_equal(flipped[1], plain[1][:, ::-1])
    assert not np.array_equal(flipped[1], plain[1])  # the blocks are not symmetric

    augment = voc_augment.voc_train_augment()
    a = augment(batch, np.random.default_rng(11))
    b = augment(batch, np.random.default_rng(11))
    c = augment(batch, np.random.default_rng(12))
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
    assert not np.array_equal(a["label"], c["label"])

    # Through the training pipeline: fixed shapes, reproducible per step.
    root = tmp_path / "VOCdevkit" / "VOC2012"
    source = get_source(config(root), "train")
    first = next(train_batches(source, 2, seed=0, augment=augment))
    again = next(train_batches(source, 2, seed=0, augment=augment))
    assert first["image"].shape == (2, 256, 256, 3) and first["label"].shape == (2, 256, 256)
    np.testing.assert_array_equal(first["label"], again["label"])


def test_train_augment_pads_when_smaller_than_the_crop(tmp_path):
    batch = coloured_batch(tmp_path)
    batch["label"] = np.where(batch["label"] == 255, 0, batch["label"])  # no ignore inside
    batch["image"] = np.maximum(batch["image"], 1)  # no black inside
    augment = voc_augment.voc_train_augment(crop_size=64, short_side_range=(20, 24), hflip=False)
    out = augment(batch, np.random.default_rng(0))
    assert out["image"].shape == (3, 64, 64, 3) and out["label"].shape == (3, 64, 64)
    rng = np.random.default_rng(0)
    for k in range(3):
        params = voc_augment.sample_train_params(
            batch["height"][k], batch["width"][k], rng, 64, (20, 24), hflip=False
        )
        assert params.pad[0] > 0 and params.pad[1] > 0
        fill = out["label"][k] == 255
        # Padding is 255 in the label exactly where it is 0 in the image, and the resized
        # image lies whole inside the crop (torchvision pads the deficit on both sides).
        np.testing.assert_array_equal(fill, (out["image"][k] == 0).all(-1))
        assert (~fill).sum() == params.resized[0] * params.resized[1]

"""Random augmentation of numpy batches (dllab_jax/data/augment.py)."""

from __future__ import annotations

import ml_collections
import numpy as np

from dllab_jax.data import augment


def aug_config(**values) -> ml_collections.ConfigDict:
    base = dict(
        random_crop_padding=0,
        random_resized_crop=False,
        rrc_scale=(0.08, 1.0),
        rrc_ratio=(3 / 4, 4 / 3),
        hflip=False,
    )
    base.update(values)
    return ml_collections.ConfigDict(base)


def _batch(n=6, h=8, w=10, dense=False):
    rng = np.random.default_rng(1)
    batch = {
        "image": rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8),
        "label": (
            rng.integers(0, 5, (n, h, w)).astype(np.int32)
            if dense
            else np.arange(n, dtype=np.int32)
        ),
        "batch_mask": np.ones(n, bool),
    }
    return batch


def test_augment_none_when_disabled():
    assert augment.make_augment(None) is None
    assert augment.make_augment(aug_config()) is None


def test_hflip_matches_np_flip():
    fn = augment.make_augment(aug_config(hflip=True))
    batch = _batch(n=64, dense=True)
    out = fn(batch, np.random.default_rng(0))
    flipped = np.array([not np.array_equal(o, i) for o, i in zip(out["image"], batch["image"])])
    assert 10 < flipped.sum() < 54
    np.testing.assert_array_equal(out["image"][flipped], np.flip(batch["image"][flipped], 2))
    np.testing.assert_array_equal(out["image"][~flipped], batch["image"][~flipped])
    np.testing.assert_array_equal(out["label"][flipped], np.flip(batch["label"][flipped], 2))
    assert out["batch_mask"] is batch["batch_mask"]


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    padding = 3
    fn = augment.make_augment(aug_config(random_crop_padding=padding))
    batch = _batch(n=16, dense=True)
    out = fn(batch, np.random.default_rng(5))
    assert out["image"].shape == batch["image"].shape
    assert out["label"].shape == batch["label"].shape
    padded = np.pad(batch["image"], ((0, 0), (padding,) * 2, (padding,) * 2, (0, 0)))
    padded_label = np.pad(
        batch["label"], ((0, 0), (padding,) * 2, (padding,) * 2), constant_values=255
    )
    h, w = batch["image"].shape[1:3]
    shifts = []
    for i in range(16):
        matches = [
            (dy, dx)
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
            if np.array_equal(out["image"][i], padded[i, dy : dy + h, dx : dx + w])
        ]
        assert matches, f"example {i} is no window of the padded image"
        dy, dx = matches[0]
        np.testing.assert_array_equal(out["label"][i], padded_label[i, dy : dy + h, dx : dx + w])
        shifts.append((dy, dx))
    assert len(set(shifts)) > 1
    assert (out["label"] == 255).any()  # padding shows as ignore


def test_random_resized_crop_shapes_and_nearest_labels():
    fn = augment.make_augment(aug_config(random_resized_crop=True))
    batch = _batch(n=8, h=12, w=16, dense=True)
    out = fn(batch, np.random.default_rng(2))
    assert out["image"].shape == (8, 12, 16, 3) and out["image"].dtype == np.uint8
    assert out["label"].shape == (8, 12, 16) and out["label"].dtype == np.int32
    # Nearest interpolation creates no new label values, and RRC never pads.
    assert set(np.unique(out["label"])) <= set(np.unique(batch["label"]))
    # Classification labels pass through.
    cls = _batch(n=8, h=12, w=16)
    np.testing.assert_array_equal(fn(cls, np.random.default_rng(2))["label"], cls["label"])


def test_rrc_params_follow_torchvision():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = augment.rrc_params(32, 40, (0.08, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 < h <= 32 and 0 < w <= 40 and top + h <= 32 and left + w <= 40
        assert 0.08 * 32 * 40 * 0.8 <= h * w <= 32 * 40
    # Impossible scale -> torchvision's centre-crop fallback with the ratio clamped.
    assert augment.rrc_params(10, 40, (2.0, 2.0), (3 / 4, 4 / 3), rng) == (0, 13, 10, 13)


def test_augment_deterministic_per_seed():
    config = aug_config(random_crop_padding=2, random_resized_crop=True, hflip=True)
    fn = augment.make_augment(config)
    batch = _batch(n=8, dense=True)
    original = {k: v.copy() for k, v in batch.items()}
    a = fn(batch, np.random.default_rng(11))
    b = fn(batch, np.random.default_rng(11))
    c = fn(batch, np.random.default_rng(12))
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
    assert not np.array_equal(a["image"], c["image"])
    for key, value in original.items():  # the input batch is left untouched
        np.testing.assert_array_equal(batch[key], value)

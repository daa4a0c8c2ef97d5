"""Tests of the data sources (shapes, cifar10, folder) and augmentation. CPU only, offline."""

from __future__ import annotations

import os
from unittest import mock

import ml_collections
import numpy as np
import pytest
from PIL import Image

from dllab_jax.data import augment, get_source, procedural
from dllab_jax.data.procedural import Background, Scene, SceneObject
from dllab_jax.errors import UserError


def shapes_config(**overrides) -> ml_collections.ConfigDict:
    values = dict(name="shapes", seed=0, image_size=32, num_train=300, num_val=40, num_test=40)
    values.update(overrides)
    return ml_collections.ConfigDict(values)


# ------------------------------------------------------------------------------------------
# shapes


def test_shapes_shapes_dtypes_and_classes():
    source = get_source(shapes_config(), "train")
    batch = source.get(np.arange(len(source)))
    assert len(source) == 300
    assert batch["image"].shape == (300, 32, 32, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (300,) and batch["label"].dtype == np.int32
    assert source.info.num_classes == 10
    assert source.info.class_names == procedural.CLASS_KINDS
    assert source.info.image_shape == (32, 32, 3)
    # Uniform labels: all ten classes turn up among 300 examples.
    assert set(batch["label"].tolist()) == set(range(10))


def test_shapes_deterministic_and_independent_of_split_size():
    generate = procedural.generate_shapes.__wrapped__  # bypass the process cache
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


def _flat_background(rgb=(0.5, 0.5, 0.5)) -> Background:
    return Background(rgb0=rgb, rgb1=rgb)


def test_rasterizer_coverage_area():
    """Summed coverage = the shape's area in pixels (exact for edges on pixel boundaries)."""
    side = 12.0  # pixels; circumradius = side / sqrt(2)
    square = SceneObject("square", (1, 0, 0), (0.5, 0.5), side / np.sqrt(2) / 32)
    rotated = SceneObject("square", (1, 0, 0), (0.47, 0.52), side / np.sqrt(2) / 32, 0.5)
    circle = SceneObject("circle", (1, 0, 0), (0.5, 0.5), 8.0 / 32)
    triangle = SceneObject("triangle", (1, 0, 0), (0.5, 0.55), 10.0 / 32, 1.0)
    coverage = procedural.object_coverage([square, rotated, circle, triangle], 32)
    area = coverage.sum(axis=(1, 2))
    assert area[0] == pytest.approx(side**2, abs=1e-3)
    assert area[1] == pytest.approx(side**2, rel=0.01)
    assert area[2] == pytest.approx(np.pi * 8.0**2, rel=0.01)
    assert area[3] == pytest.approx(3 * np.sqrt(3) / 4 * 10.0**2, rel=0.01)
    # The axis-aligned square covers exactly pixels 10..21 in both directions.
    expected = np.zeros((32, 32))
    expected[10:22, 10:22] = 1
    np.testing.assert_allclose(coverage[0], expected, atol=1e-5)


def test_rasterizer_visible_object_map_and_colours():
    """The later object wins where two overlap; background is -1; colours composite."""
    # Square: x and y in [8, 16] px; circle: centre (18, 16) px, radius 5 px.
    square = SceneObject("square", (1.0, 0.0, 0.0), (0.375, 0.5), 8 / np.sqrt(2) / 32)
    circle = SceneObject("circle", (0.0, 0.0, 1.0), (0.5625, 0.5), 5 / 32)
    scene = Scene(_flat_background(), (square, circle))
    images, visible = procedural.rasterize([scene, Scene(_flat_background(), ())], 32)
    assert images.shape == (2, 32, 32, 3) and visible.shape == (2, 32, 32)
    row = 13
    assert visible[0, row, 10] == 0  # square only
    assert visible[0, row, 15] == 1  # both: the circle is on top
    assert visible[0, row, 21] == 1  # circle only
    assert visible[0, row, 2] == -1 and visible[0, 2, 16] == -1
    np.testing.assert_allclose(images[0, row, 10], [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(images[0, row, 15], [0, 0, 1], atol=1e-6)
    np.testing.assert_allclose(images[0, row, 2], [0.5, 0.5, 0.5], atol=1e-6)
    assert (visible[1] == -1).all()
    np.testing.assert_allclose(images[1], 0.5, atol=1e-6)


def test_shapes_labels_match_scene_kinds():
    """The label is the class of the one non-distractor object, which is drawn at its size."""
    rng = procedural.example_rng(0, "train", 7)
    scene = procedural.sample_shapes_scene(rng)
    kinds = [o.kind for o in scene.objects]
    targets = [k for k in kinds if k in procedural.CLASS_KINDS]
    assert len(targets) == 1
    assert procedural.class_label(scene) == procedural.CLASS_KINDS.index(targets[0])
    _, visible = procedural.rasterize([scene], 32)
    target_index = kinds.index(targets[0])
    assert (visible[0] == target_index).sum() > 20  # the object is visible, not hidden


def test_save_example_grid_smoke(tmp_path):
    data = procedural.generate_shapes(0, "val", 40, (32, 32))
    path = procedural.save_example_grid(
        str(tmp_path / "grid.png"), data["image"][:6], data["label"][:6], procedural.CLASS_KINDS
    )
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100


# ------------------------------------------------------------------------------------------
# cifar10 (tfds)


def cifar_config(**overrides) -> ml_collections.ConfigDict:
    values = dict(
        name="cifar10",
        data_dir=None,
        train_split="train[:40000]",
        val_split="train[40000:]",
        test_split="test",
        download=False,
    )
    values.update(overrides)
    return ml_collections.ConfigDict(values)


def test_cifar10_under_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        sources = {split: get_source(cifar_config(), split) for split in ("train", "val", "test")}
    for source in sources.values():
        batch = source.get(np.arange(len(source)))
        # mock_data ignores slicing: every split has num_examples examples.
        assert len(source) == 12
        assert batch["image"].shape == (12, 32, 32, 3) and batch["image"].dtype == np.uint8
        assert batch["label"].dtype == np.int32
        assert batch["label"].min() >= 0 and batch["label"].max() <= 9
        assert source.info.class_names[:2] == ("airplane", "automobile")
        assert source.info.num_classes == 10


def test_cifar10_not_prepared_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"not prepared in .*tfds build cifar10"):
        get_source(cifar_config(data_dir=str(tmp_path)), "train")
    with pytest.raises(UserError, match="unknown split"):
        get_source(cifar_config(data_dir=str(tmp_path)), "valid")


def _write_fake_cifar_binaries(folder, per_file: int, rng) -> dict[str, np.ndarray]:
    """The CIFAR-10 binary version's files, `per_file` random records each."""
    raw = os.path.join(folder, "cifar-10-batches-bin")
    os.makedirs(raw)
    labels = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels[name] = rng.integers(0, 10, per_file).astype(np.uint8)
        pixels = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        records = np.concatenate([labels[name][:, None], pixels], axis=1)
        with open(os.path.join(raw, name + ".bin"), "wb") as f:
            f.write(records.tobytes())
    names = "airplane automobile bird cat deer dog frog horse ship truck".split()
    with open(os.path.join(raw, "batches.meta.txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    return labels


def test_cifar10_prepared_keeps_the_handout_split(tmp_path):
    """A real (tiny, fake) prepared cifar10: tfds stores it shuffled, and the source still gives
    data_batch_1..4 in file order for train and data_batch_5 for val, as the handout."""
    import tensorflow_datasets as tfds

    labels = _write_fake_cifar_binaries(str(tmp_path / "raw"), 5, np.random.default_rng(0))
    data_dir = str(tmp_path / "tfds")
    # Prepare from the local files: the download manager returns them. url_infos=None skips
    # the checksum file lookup (it needs importlib_resources, which the venv may lack).
    with (
        mock.patch.object(
            tfds.download.DownloadManager,
            "download_and_extract",
            return_value=str(tmp_path / "raw"),
        ),
        mock.patch.object(tfds.core.DatasetBuilder, "url_infos", None),
    ):
        tfds.builder("cifar10", data_dir=data_dir).download_and_prepare()
    config = cifar_config(data_dir=data_dir, train_split="train[:20]", val_split="train[20:]")
    train, val, test = (get_source(config, s) for s in ("train", "val", "test"))
    train_labels = np.concatenate([labels[f"data_batch_{i}"] for i in range(1, 5)])
    np.testing.assert_array_equal(train.get(np.arange(20))["label"], train_labels)
    np.testing.assert_array_equal(val.get(np.arange(5))["label"], labels["data_batch_5"])
    np.testing.assert_array_equal(test.get(np.arange(5))["label"], labels["test_batch"])
    assert len(train) == 20 and len(val) == 5 and len(test) == 5
    assert train.info.class_names[-1] == "truck"
    # tfds's own order differs (so the sorting above is needed).
    stored = [
        ex["label"]
        for ex in tfds.as_numpy(
            tfds.builder("cifar10", data_dir=data_dir).as_dataset(split="train[:20]")
        )
    ]
    assert not np.array_equal(stored, train_labels)


# ------------------------------------------------------------------------------------------
# folder


def _write_folder(root, layout: dict[str, dict[str, list[tuple[str, tuple[int, int]]]]]):
    """Writes images root/<split>/<class>/<file> of the given (width, height)."""
    rng = np.random.default_rng(0)
    for split, classes in layout.items():
        for name, files in classes.items():
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
            for file, (w, h) in files:
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(os.path.join(root, split, name, file))


def folder_config(root, image_size=16) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(name="folder", root=str(root), image_size=image_size))


def test_folder_source(tmp_path):
    layout = {
        "train": {
            "wren": [("a.png", (16, 16)), ("b.jpg", (20, 12))],
            "crow": [("c.JPEG", (16, 16))],
            "owl": [("d.png", (30, 30)), ("e.png", (16, 16))],
        },
        "valid": {"owl": [("f.jpg", (24, 24))], "crow": [("g.png", (16, 16))]},
    }
    _write_folder(tmp_path, layout)
    (tmp_path / "train" / "owl" / "notes.txt").write_text("not an image")  # skipped
    # A grey (mode L) image must come back as RGB.
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(tmp_path / "train" / "wren" / "z.png")

    train = get_source(folder_config(tmp_path), "train")
    assert train.info.class_names == ("crow", "owl", "wren")
    assert train.info.image_shape == (16, 16, 3)
    assert len(train) == 6
    batch = train.get(np.arange(6))
    assert batch["image"].shape == (6, 16, 16, 3) and batch["image"].dtype == np.uint8
    np.testing.assert_array_equal(batch["label"], [0, 1, 1, 2, 2, 2])
    # e.png is 16x16 already: read unchanged. z.png: grey -> equal channels.
    with Image.open(tmp_path / "train" / "owl" / "e.png") as image:
        np.testing.assert_array_equal(batch["image"][2], np.asarray(image))
    assert (batch["image"][5] == 7).all()

    val = get_source(folder_config(tmp_path, image_size=8), "val")  # reads valid/
    np.testing.assert_array_equal(val.get([0, 1])["label"], [0, 1])
    assert val.get([1])["image"].shape == (1, 8, 8, 3)


def test_folder_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        get_source(folder_config(tmp_path / "missing"), "train")
    layout = {"train": {"a": [("x.png", (8, 8))]}, "test": {"b": [("y.png", (8, 8))]}}
    _write_folder(tmp_path, layout)
    with pytest.raises(UserError, match=r"no folder.*valid"):
        get_source(folder_config(tmp_path), "val")
    with pytest.raises(UserError, match=r"not in .*train: \['b'\]"):
        get_source(folder_config(tmp_path), "test")
    os.makedirs(tmp_path / "val" / "a")  # 'val' is the fallback name; it has no images
    with pytest.raises(UserError, match=r"val has no images"):
        get_source(folder_config(tmp_path), "val")


# ------------------------------------------------------------------------------------------
# augment


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

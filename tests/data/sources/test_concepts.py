"""The procedural concept source (dllab_jax/data/sources/concepts.py). CPU, offline, small."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from dllab_jax.data.procedural import concept_codes, concept_images
from dllab_jax.data.sources import concepts as src_concepts
from dllab_jax.errors import UserError


def config(**overrides) -> ml_collections.ConfigDict:
    values = dict(name="concepts", seed=0, num_train=16, num_val=32, num_test=16)
    values.update(overrides)
    return ml_collections.ConfigDict(values)


def _all(source) -> dict[str, np.ndarray]:
    return source.get(np.arange(len(source)))


def _coverage(images: np.ndarray) -> np.ndarray:
    """[n, H, W] object coverage of uint8 renders: a pixel is coverage * colour on black."""
    brightest = images.max(axis=-1).astype(np.float32)
    return brightest / brightest.max(axis=(1, 2), keepdims=True)


def test_arrays_shapes_dtypes_and_info():
    source = src_concepts.make_concepts(config(), "val")
    batch = _all(source)
    n = 32
    assert len(source) == n
    expected = {
        "image": ((n, 28, 28, 3), np.uint8),
        "shape": ((n,), np.int32),
        "shape_onehot": ((n, 2), np.float32),
        "colour": ((n, 3), np.float32),
        "colour_bit": ((n,), np.int32),
        "size": ((n,), np.float32),
        "size_bit": ((n,), np.int32),
        "code": ((n,), np.int32),
        "label": ((n,), np.int32),
        "center": ((n, 2), np.float32),
    }
    for key, (shape, dtype) in expected.items():
        assert batch[key].shape == shape and batch[key].dtype == dtype, key
    info = source.info
    assert info.num_classes == 8 and info.image_shape == (28, 28, 3)
    assert info.class_names == ("000", "001", "010", "011", "100", "101", "110", "111")
    code = batch["code"]
    np.testing.assert_array_equal(
        code, batch["shape"] * 4 + batch["colour_bit"] * 2 + batch["size_bit"]
    )
    np.testing.assert_array_equal(batch["label"], code)
    np.testing.assert_array_equal(batch["shape_onehot"].argmax(-1), batch["shape"])
    # Round-robin over the eight codes, in order.
    np.testing.assert_array_equal(code, np.arange(n) % 8)
    assert [concept_codes.describe_code(c) for c in ("011", "100")] == [
        "small blue circle",
        "large red triangle",
    ]
    unit = concept_codes.to_unit(batch["image"])
    assert unit.dtype == np.float32 and 0.0 <= unit.min() and unit.max() <= 1.0
    np.testing.assert_allclose(unit * 255.0, batch["image"], atol=1e-4)


def test_deterministic_and_split_size_independent():
    a = _all(src_concepts.make_concepts(config(), "val"))
    src_concepts.generate_concepts.cache_clear()
    b = _all(src_concepts.make_concepts(config(num_val=8), "val"))
    for key in a:
        np.testing.assert_array_equal(a[key][:8], b[key], err_msg=key)
    c = _all(src_concepts.make_concepts(config(seed=1), "val"))
    t = _all(src_concepts.make_concepts(config(), "test"))
    assert not np.array_equal(a["image"], c["image"])
    assert not np.array_equal(a["image"][:16], t["image"])
    # The single-example path gives the same example as the batched split.
    ex = concept_images.concept_example(0, "val", 5, "101")
    np.testing.assert_array_equal(np.round(ex["image"] * 255.0).astype(np.uint8), a["image"][5])
    np.testing.assert_array_equal(ex["colour"], a["colour"][5])
    assert ex["size"] / 14.0 == pytest.approx(float(a["size"][5]), rel=1e-6)
    again = concept_images.concept_example(0, "val", 5, "101")
    np.testing.assert_array_equal(ex["image"], again["image"])
    # Cached arrays are read-only; get returns copies.
    a["image"][:] = 0
    np.testing.assert_array_equal(
        _all(src_concepts.make_concepts(config(), "val"))["image"][:8], b["image"]
    )


def test_every_code_renders_its_concepts():
    batch = _all(src_concepts.make_concepts(config(num_val=128), "val"))
    images, cov = batch["image"], _coverage(batch["image"])
    assert set(batch["code"].tolist()) == set(range(8))
    # Black background and objects fully inside: the two outermost rings of pixels are black.
    border = np.ones((28, 28), bool)
    border[2:-2, 2:-2] = False
    assert images[:, border].max() == 0
    for i in range(len(images)):
        # Colour: fully covered pixels hold the stored colour, within the jitter of the code's.
        full = images[i][cov[i] == 1.0] / 255.0
        assert len(full) > 20
        np.testing.assert_allclose(
            full, np.broadcast_to(batch["colour"][i], full.shape), atol=0.6 / 255
        )
        nominal = concept_codes.COLOURS[batch["colour_bit"][i]]
        assert np.abs(full - nominal).max() <= concept_images.COLOUR_JITTER + 1 / 255
    # Size: every small object covers fewer pixels than every large one (any shapes).
    area = cov.sum(axis=(1, 2))
    small = batch["size_bit"] == 1
    assert area[small].max() < 0.8 * area[~small].min()
    # Shape: filled fraction of the bounding box, from the image alone (extents from coverage):
    # ~pi/4 for a circle, ~1/2 for a triangle.
    fill = area / (cov.max(axis=1).sum(-1) * cov.max(axis=2).sum(-1))
    circle = batch["shape"] == 0
    assert fill[circle].min() > 0.72 and fill[~circle].max() < 0.65
    # ... and against the stored size (bounding box = (2 * size)^2, size normalised by 14).
    exact = area / (2.0 * 14.0 * batch["size"]) ** 2
    np.testing.assert_allclose(exact[circle], np.pi / 4, atol=0.03)
    np.testing.assert_allclose(exact[~circle], 0.5, atol=0.03)
    # Triangle apex up: more coverage in the lower half of its rows.
    rows = np.arange(28)[None, :]
    row_mass = cov.sum(axis=2)
    centroid = (row_mass * rows).sum(-1) / row_mass.sum(-1)
    center_y = batch["center"][:, 1] * 28 - 0.5
    assert np.all(centroid[~circle] > center_y[~circle] + 0.1 * 28 * batch["size"][~circle])
    np.testing.assert_allclose(centroid[circle], center_y[circle], atol=0.2)


def test_split_codes_from_config():
    train = _all(src_concepts.make_concepts(config(num_train=20), "train"))
    assert sorted(set(train["code"].tolist())) == sorted(
        concept_codes.code_index(c) for c in concept_codes.SEEN_CODES
    )
    for split in ("val", "test"):
        codes = _all(src_concepts.make_concepts(config(), split))["code"]
        assert set(codes.tolist()) == set(range(8))
    # `codes` applies to every split; train_codes / eval_codes override it.
    cfg = config(codes=("011", "110"), train_codes="000, 001")
    assert set(_all(src_concepts.make_concepts(cfg, "train"))["code"].tolist()) == {0, 1}
    assert set(_all(src_concepts.make_concepts(cfg, "val"))["code"].tolist()) == {3, 6}
    cfg = config(eval_codes=list(concept_codes.UNSEEN_CODES))
    assert set(_all(src_concepts.make_concepts(cfg, "test"))["code"].tolist()) == {3, 5, 6, 7}


@pytest.mark.parametrize("codes", [("012",), ("0000",), ("000", "1"), (0, 1), (), "abc", 3])
def test_invalid_codes_raise(codes):
    with pytest.raises(UserError, match=r"'000', '001'.*'111'|empty"):
        src_concepts.make_concepts(config(codes=codes), "train")


def test_other_config_errors():
    with pytest.raises(UserError, match="train_codes"):
        src_concepts.make_concepts(config(train_codes=("2",)), "train")
    with pytest.raises(UserError, match="unknown split"):
        src_concepts.make_concepts(config(), "validation")

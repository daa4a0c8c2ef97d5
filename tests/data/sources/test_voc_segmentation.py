"""The PASCAL VOC 2012 segmentation source (dllab_jax/data/sources/voc_segmentation.py).

Each test writes a tiny VOCdevkit/VOC2012 folder in the published layout (tests/voc_stand_in.py):
JPEGs of different sizes, palette PNG labels with classes and 255 borders,
ImageSets/Segmentation. CPU, offline.
"""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest
from PIL import Image
from voc_stand_in import EXAMPLES, SPLITS, save_palette_png, write_voc

from dllab_jax.data import get_source
from dllab_jax.data.pipeline import eval_batches
from dllab_jax.data.readers import voc as readers_voc
from dllab_jax.data.sources import voc_segmentation
from dllab_jax.errors import UserError


def config(root, **overrides) -> ml_collections.ConfigDict:
    values = dict(name="voc_segmentation", root=str(root), pad_size=64)
    values.update(overrides)
    return ml_collections.ConfigDict(values)


def test_source_reads_published_layout_exactly(tmp_path):
    root, labels = write_voc(tmp_path)
    # The palette really is VOC's (PNG colours as the published files show them).
    np.testing.assert_array_equal(
        readers_voc.voc_palette()[[1, 15, 255]], [[128, 0, 0], [192, 128, 128], [224, 224, 192]]
    )
    source = get_source(config(root), "train")
    assert isinstance(source, voc_segmentation.VocSegmentationSource)
    assert len(source) == 3 and source.ids == SPLITS["train"]
    assert len(get_source(config(root), "val")) == 2
    assert get_source(config(root), "test").ids == SPLITS["val"]  # no public test labels
    assert source.info.num_classes == 21 == len(source.info.class_names)
    assert source.info.class_names[0] == "background"
    assert source.info.class_names[15] == "person" and source.info.class_names[20] == "tvmonitor"
    assert source.info.image_shape == (64, 64, 3)

    batch = source.get([1, 0, 2])
    assert set(batch) == {"image", "label", "height", "width"}
    assert batch["image"].shape == (3, 64, 64, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (3, 64, 64) and batch["label"].dtype == np.int32
    assert batch["height"].dtype == np.int32 and batch["width"].dtype == np.int32
    for k, name in enumerate(["2007_000039", "2007_000032", "2008_000001"]):
        h, w, _ = EXAMPLES[name]
        assert (batch["height"][k], batch["width"][k]) == (h, w)
        # Exact class ids and 255 borders, read from the palette indices.
        np.testing.assert_array_equal(batch["label"][k, :h, :w], labels[name])
        with Image.open(root / "JPEGImages" / f"{name}.jpg") as jpg:
            np.testing.assert_array_equal(batch["image"][k, :h, :w], np.asarray(jpg.convert("RGB")))
        # Padding: image 0, label 255 at the bottom and right.
        assert not batch["image"][k, h:].any() and not batch["image"][k, :, w:].any()
        assert (batch["label"][k, h:] == 255).all() and (batch["label"][k, :, w:] == 255).all()
    assert set(np.unique(batch["label"]).tolist()) == {0, 1, 3, 7, 12, 15, 20, 255}


def test_default_pad_size_and_eval_batches(tmp_path):
    root, labels = write_voc(tmp_path)
    cfg = ml_collections.ConfigDict(dict(name="voc_segmentation", root=str(root)))
    source = voc_segmentation.make_voc_segmentation(cfg, "val")
    assert source.pad_size == 512 and source.info.image_shape == (512, 512, 3)
    batches = list(eval_batches(source, 3))
    assert len(batches) == 1
    (batch,) = batches
    assert batch["image"].shape == (3, 512, 512, 3) and batch["label"].shape == (3, 512, 512)
    np.testing.assert_array_equal(batch["batch_mask"], [1, 1, 0])
    np.testing.assert_array_equal(batch["height"], [48, 24, 48])
    np.testing.assert_array_equal(batch["label"][1, :24, :60], labels["2009_000002"])


def test_unused_png_values_become_ignore(tmp_path):
    root, _ = write_voc(tmp_path)
    label = np.zeros((40, 56), np.uint8)
    label[:, :10] = 30  # not a VOC class
    label[:, 10:20] = 254
    label[:, 20:30] = 20
    save_palette_png(label, root / "SegmentationClass" / "2007_000032.png")
    got = get_source(config(root), "train").get([0])["label"][0, :40, :56]
    assert set(np.unique(got[:, :20]).tolist()) == {255}
    assert set(np.unique(got[:, 20:30]).tolist()) == {20}
    assert set(np.unique(got[:, 30:]).tolist()) == {0}


def test_user_errors(tmp_path):
    root, _ = write_voc(tmp_path)
    with pytest.raises(UserError, match=r"config\.data\.root is not set"):
        get_source(ml_collections.ConfigDict(dict(name="voc_segmentation")), "train")
    with pytest.raises(UserError, match="does not exist"):
        get_source(config(tmp_path / "nowhere"), "train")
    with pytest.raises(UserError, match="unknown split"):
        get_source(config(root), "trainval")
    with pytest.raises(UserError, match="pad_size"):
        get_source(config(root, pad_size=0), "train")

    # An image larger than pad_size: found when read (the source is lazy), naming the file.
    source = get_source(config(root, pad_size=60), "train")
    source.get([0, 2])  # 40x56 and 32x32 fit
    with pytest.raises(
        UserError, match=r"2007_000039\.jpg is 64x48 .*raise config\.data\.pad_size"
    ):
        source.get([1])

    # A PNG rendered as RGB is not a label map.
    Image.new("RGB", (32, 32)).save(root / "SegmentationClass" / "2008_000001.png")
    with pytest.raises(UserError, match=r"2008_000001\.png is a 'RGB' PNG"):
        source.get([2])


@pytest.mark.parametrize(
    ("remove", "pattern"),
    [
        ("JPEGImages/2007_000039.jpg", r"JPEGImages/2007_000039\.jpg"),
        ("SegmentationClass/2008_000001.png", r"SegmentationClass/2008_000001\.png"),
        ("ImageSets/Segmentation/train.txt", r"split list .*Segmentation/train\.txt does not"),
    ],
)
def test_missing_files_name_the_path(tmp_path, remove, pattern):
    root, _ = write_voc(tmp_path)
    (root / remove).unlink()
    with pytest.raises(UserError, match=pattern):
        get_source(config(root), "train")
    get_source(config(root), "val")  # the other split is intact

"""The `voc_captions` source (dllab_jax/data/sources/voc_captions.py) on a tiny folder in
the published layout."""

from __future__ import annotations

import json
import os
import re

import ml_collections
import numpy as np
import pytest
from PIL import Image

from dllab_jax import data
from dllab_jax.data import get_source
from dllab_jax.errors import UserError


@pytest.fixture
def voc_root(tmp_path, write_jpeg):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    ids = ["2007_000032", "2007_000039", "2007_000063", "2008_000001"]
    for k, image_id in enumerate(ids):
        write_jpeg(str(root / "JPEGImages" / f"{image_id}.jpg"), (200, 40 * k, 10), (40, 30))
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text(f"{ids[0]}\n{ids[1]}\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text(f"{ids[2]}\n{ids[3]}\n\n")
    captions_json = tmp_path / "captions.json"
    # Both value forms, and a key with the file extension.
    mapping = {
        ids[0]: "an airplane on the runway",
        ids[1]: ["a tv monitor on a desk", "a screen, a keyboard and a mouse"],
        f"{ids[2]}.jpg": ["two people riding horses"],
    }
    captions_json.write_text(json.dumps(mapping))
    return root, captions_json, ids


def voc_config(root, captions_json, **overrides) -> ml_collections.ConfigDict:
    values = dict(name="voc_captions", root=str(root), captions_json=str(captions_json))
    values.update(image_size=16, **overrides)
    return ml_collections.ConfigDict(values)


def test_voc_captions_reads_layout_and_resizes(voc_root):
    root, captions_json, ids = voc_root
    source = get_source(voc_config(root, captions_json), "train")
    assert len(source) == 2 and source.ids == ids[:2]
    batch = source.get([1, 0])
    assert batch["image"].shape == (2, 16, 16, 3) and batch["image"].dtype == np.uint8
    assert batch["captions"].shape == (2, 2) and batch["captions"].dtype == object
    assert list(batch["captions"][0]) == [
        "a tv monitor on a desk",
        "a screen, a keyboard and a mouse",
    ]
    assert list(batch["captions"][1]) == ["an airplane on the runway", ""]
    # Pixels: the JPEG resized bilinearly to 16x16, as PIL does it.
    with Image.open(root / "JPEGImages" / f"{ids[1]}.jpg") as image:
        expected = np.asarray(image.convert("RGB").resize((16, 16), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(batch["image"][0], expected)
    assert source.info.image_shape == (16, 16, 3)
    # A fixed number of captions per image pads or drops.
    three = get_source(voc_config(root, captions_json, captions_per_image=3), "train")
    assert three.get([1])["captions"].tolist() == [
        ["a tv monitor on a desk", "a screen, a keyboard and a mouse", ""]
    ]


def test_voc_captions_missing_captions_and_test_split(voc_root):
    root, captions_json, ids = voc_root
    with pytest.raises(UserError, match=rf"1 of 2 images .* no caption .*{ids[3]}"):
        get_source(voc_config(root, captions_json), "val")
    val = get_source(voc_config(root, captions_json, skip_uncaptioned=True), "val")
    test = get_source(voc_config(root, captions_json, skip_uncaptioned=True), "test")
    assert val.ids == test.ids == [ids[2]]
    assert val.get([0])["captions"].tolist() == [["two people riding horses"]]
    corpus = data.text_corpus(voc_config(root, captions_json))
    assert corpus == [
        "an airplane on the runway",
        "a tv monitor on a desk",
        "a screen, a keyboard and a mouse",
    ]


def test_voc_captions_missing_paths(voc_root, tmp_path):
    root, captions_json, _ = voc_root
    with pytest.raises(UserError, match="nowhere"):
        get_source(voc_config(tmp_path / "nowhere", captions_json), "train")
    with pytest.raises(UserError, match="root is not set"):
        get_source(voc_config("", captions_json), "train")
    with pytest.raises(UserError, match=re.escape("missing.json")):
        get_source(voc_config(root, tmp_path / "missing.json"), "train")
    with pytest.raises(UserError, match="captions_json is not set"):
        get_source(voc_config(root, ""), "train")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        get_source(voc_config(root, bad_json), "train")
    os.remove(root / "JPEGImages" / "2007_000039.jpg")
    with pytest.raises(UserError, match=re.escape("2007_000039.jpg")):
        get_source(voc_config(root, captions_json), "train")
    os.remove(root / "ImageSets" / "Segmentation" / "train.txt")
    with pytest.raises(UserError, match=re.escape("Segmentation/train.txt")):
        get_source(voc_config(root, captions_json), "train")
    os.rename(root / "JPEGImages", root / "images")
    with pytest.raises(UserError, match="JPEGImages"):
        get_source(voc_config(root, captions_json), "val")

"""The `flickr8k` source (dllab_jax/data/sources/flickr8k.py) on a tiny folder in the
published layout."""

from __future__ import annotations

import csv
import os
import re

import ml_collections
import pytest

from dllab_jax.data import get_source
from dllab_jax.errors import UserError

FLICKR_NAMES = [f"{1000 + k}_abc.jpg" for k in range(5)]


@pytest.fixture
def flickr_root(tmp_path, write_jpeg):
    root = tmp_path / "flickr8k"
    (root / "Images").mkdir(parents=True)
    for k, name in enumerate(reversed(FLICKR_NAMES)):  # file order must not matter
        write_jpeg(str(root / "Images" / name), (30 * k, 100, 200), (24, 20))
    with open(root / "captions.txt", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        for name in FLICKR_NAMES:
            writer.writerow([name, f"a dog runs in {name}"])
            writer.writerow([name, f"a dog, brown and white, in {name} ."])  # quoted by csv
        # An unquoted caption with commas, as some copies of the file have.
        f.write(f"{FLICKR_NAMES[0]},a child , in pink, climbs\n")
    return root


def test_flickr8k_fallback_split_and_commas(flickr_root):
    config = ml_collections.ConfigDict(
        dict(name="flickr8k", root=str(flickr_root), image_size=8, num_val=1, num_test=1)
    )
    train = get_source(config, "train")
    val = get_source(config, "val")
    test = get_source(config, "test")
    assert train.ids == FLICKR_NAMES[:3] and val.ids == [FLICKR_NAMES[3]]
    assert test.ids == [FLICKR_NAMES[4]]
    batch = train.get([0, 2])
    assert batch["image"].shape == (2, 8, 8, 3)
    assert batch["captions"].shape == (2, 3)
    assert batch["captions"][0].tolist() == [
        f"a dog runs in {FLICKR_NAMES[0]}",
        f"a dog, brown and white, in {FLICKR_NAMES[0]} .",
        "a child , in pink, climbs",
    ]
    assert batch["captions"][1, 2] == ""
    config.num_val = 4  # leaves no training image
    with pytest.raises(UserError, match="num_val"):
        get_source(config, "train")


def test_flickr8k_official_split_files_and_missing_paths(flickr_root, tmp_path):
    (flickr_root / "Flickr_8k.trainImages.txt").write_text("\n".join(FLICKR_NAMES[1:4]) + "\n")
    (flickr_root / "Flickr_8k.devImages.txt").write_text(FLICKR_NAMES[0] + "\n")
    (flickr_root / "Flickr_8k.testImages.txt").write_text(FLICKR_NAMES[4] + "\n")
    config = ml_collections.ConfigDict(dict(name="flickr8k", root=str(flickr_root), image_size=8))
    assert get_source(config, "train").ids == FLICKR_NAMES[1:4]
    assert get_source(config, "val").ids == [FLICKR_NAMES[0]]
    assert get_source(config, "test").get([0])["captions"].shape == (1, 2)
    (flickr_root / "Flickr_8k.testImages.txt").write_text("missing_caption.jpg\n")
    with pytest.raises(UserError, match=re.escape("missing_caption.jpg")):
        get_source(config, "test")
    os.remove(flickr_root / "Flickr_8k.testImages.txt")
    with pytest.raises(UserError, match=re.escape("Flickr_8k.testImages.txt")):
        get_source(config, "test")
    os.remove(flickr_root / "Images" / FLICKR_NAMES[2])
    with pytest.raises(UserError, match=re.escape(FLICKR_NAMES[2])):
        get_source(config, "train")
    (flickr_root / "captions.txt").write_text("file,text\na.jpg,a cat\n")
    with pytest.raises(UserError, match="header"):
        get_source(config, "train")
    os.remove(flickr_root / "captions.txt")
    with pytest.raises(UserError, match=re.escape("captions.txt")):
        get_source(config, "train")
    os.rename(flickr_root / "Images", flickr_root / "images_old")
    with pytest.raises(UserError, match="Images"):
        get_source(config, "train")
    config.root = str(tmp_path / "absent")
    with pytest.raises(UserError, match="absent"):
        get_source(config, "train")

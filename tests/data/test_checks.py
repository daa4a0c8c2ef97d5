"""The checks the sources share (dllab_jax/data/checks.py)."""

from __future__ import annotations

import zlib

import ml_collections
import numpy as np
import pytest

from dllab_jax.data import checks
from dllab_jax.errors import UserError


def test_split_names_and_split_sizes():
    checks.check_split("shapes", "val")
    with pytest.raises(
        UserError,
        match=r"unknown split 'valid' for data source 'shapes'; use one of "
        r"\('train', 'val', 'test'\)",
    ):
        checks.check_split("shapes", "valid")
    with pytest.raises(UserError, match=r"use one of \('train',\)"):
        checks.check_split("x", "val", ("train",))
    config = ml_collections.ConfigDict(dict(num_val=7))
    sizes = {"train": 100, "val": 10, "test": 10}
    assert checks.split_size(config, "val", sizes) == 7
    assert checks.split_size(config, "test", sizes) == 10
    with pytest.raises(UserError, match=r"config.data.num_val must be an integer >= 0, got -1"):
        checks.split_size(ml_collections.ConfigDict(dict(num_val=-1)), "val", sizes)


def test_image_sizes():
    config = ml_collections.ConfigDict(dict(image_size=(20, 28)))
    assert checks.image_size_key(config, 32) == (20, 28)
    assert checks.image_size_key(ml_collections.ConfigDict(), 32) == (32, 32)
    with pytest.raises(UserError, match="at least 8 pixels"):
        checks.image_size_key(ml_collections.ConfigDict(dict(image_size=4)), 32, minimum=8)
    with pytest.raises(UserError, match="an int or"):
        checks.image_size_key(ml_collections.ConfigDict(dict(image_size="32")), 32)
    assert checks.image_hw(28) == (28, 28) and checks.image_hw((20, 28)) == (20, 28)


def test_example_rng_is_one_stream_per_seed_split_index_and_extra_integers():
    def draw(*args):
        return checks.example_rng(*args).random(4)

    # The entropy is [seed, crc32(split), index, *stream], whatever the split size.
    expected = np.random.default_rng(np.random.SeedSequence([3, zlib.crc32(b"val"), 5, 6])).random(
        4
    )
    np.testing.assert_array_equal(draw(3, "val", 5, 6), expected)
    np.testing.assert_array_equal(draw(3, "val", 5), draw(3, "val", 5))
    others = [draw(3, "val", 5), draw(3, "train", 5), draw(3, "val", 4), draw(4, "val", 5)]
    assert len({tuple(d) for d in [*others, tuple(expected)]}) == 5


def test_holdout_range_and_folders(tmp_path):
    config = ml_collections.ConfigDict(dict(num_val=2, num_test=3))
    ranges = [checks.holdout_range(config, s, 10, 500, str) for s in ("train", "val", "test")]
    assert ranges == [(0, 5), (5, 7), (7, 10)]
    with pytest.raises(UserError, match=r"^2 3$"):
        checks.holdout_range(config, "train", 5, 500, lambda v, t: f"{v} {t}")
    with pytest.raises(UserError, match=r"config\.data\.root is not set; point it at the folder"):
        checks.root_folder(ml_collections.ConfigDict(), "the folder", "image folder")
    missing = ml_collections.ConfigDict(dict(root=str(tmp_path / "nope")))
    with pytest.raises(UserError, match=r"image folder root .*nope does not exist; set config"):
        checks.root_folder(missing, "the folder", "image folder")
    here = ml_collections.ConfigDict(dict(root=str(tmp_path)))
    assert checks.root_folder(here, "the folder", "image folder") == str(tmp_path)
    with pytest.raises(UserError, match=r"file .*absent.txt does not exist; write it"):
        checks.require_file(str(tmp_path / "absent.txt"), "write it")
    with pytest.raises(UserError, match=r"folder .*absent does not exist; make it"):
        checks.require_dir(str(tmp_path / "absent"), "make it")

"""The concept file layout (dllab_jax/data/sources/concepts_folder.py): export and read back."""

from __future__ import annotations

import json
import os
import re

import ml_collections
import numpy as np
import pytest

from dllab_jax.data.procedural import concept_codes
from dllab_jax.data.sources import concepts as src_concepts
from dllab_jax.data.sources import concepts_folder
from dllab_jax.errors import UserError


def config(**overrides) -> ml_collections.ConfigDict:
    values = dict(name="concepts", seed=0, num_train=16, num_val=32, num_test=16)
    values.update(overrides)
    return ml_collections.ConfigDict(values)


def _all(source) -> dict[str, np.ndarray]:
    return source.get(np.arange(len(source)))


def test_export_and_folder_round_trip(tmp_path):
    sources = {split: src_concepts.make_concepts(config(), split) for split in ("train", "val")}
    for split, source in sources.items():
        paths = concepts_folder.export_concepts_folder(source, str(tmp_path / "splits" / split))
        assert len(paths) == len(source)
    name = os.path.basename(paths[3])
    assert name == "CLEVR_011_000003.png"
    with open(paths[3][:-4] + ".json") as f:
        record = json.load(f)
    assert set(record) == {"code", "shape", "color", "size", "center", "image_size"}
    assert record["shape"] == "circle" and record["image_size"] == 28

    def check(loaded, expected):
        assert loaded.info == expected.info and len(loaded) == len(expected)
        a, b = _all(loaded), _all(expected)
        assert set(a) == set(b)
        for key in a:
            assert a[key].dtype == b[key].dtype, key
            if a[key].dtype == np.float32:
                np.testing.assert_allclose(a[key], b[key], atol=1e-6, err_msg=key)
            else:
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)

    folder_cfg = ml_collections.ConfigDict({"root": str(tmp_path / "splits")})
    for split, source in sources.items():
        check(concepts_folder.make_concepts_folder(folder_cfg, split), source)
    with pytest.raises(UserError, match="has no folder"):
        concepts_folder.make_concepts_folder(folder_cfg, "test")
    # Explicit code keys filter a split folder.
    folder_cfg.eval_codes = ("111",)
    assert set(_all(concepts_folder.make_concepts_folder(folder_cfg, "val"))["code"].tolist()) == {
        7
    }

    # Flat layout: every split reads everything, filtered by the code keys (train: seen codes).
    flat = str(tmp_path / "flat")
    concepts_folder.export_concepts_folder(_all(sources["val"]), flat)
    flat_cfg = ml_collections.ConfigDict({"root": flat})
    train = _all(concepts_folder.make_concepts_folder(flat_cfg, "train"))
    val = _all(sources["val"])
    keep = np.isin(val["code"], [concept_codes.code_index(c) for c in concept_codes.SEEN_CODES])
    np.testing.assert_array_equal(train["image"], val["image"][keep])
    np.testing.assert_array_equal(train["code"], val["code"][keep])
    assert len(concepts_folder.make_concepts_folder(flat_cfg, "test")) == len(val["code"])

    # Lenient JSON: 'colour' in 0..255, no centre, no image_size; unpadded id.
    os.rename(os.path.join(flat, "CLEVR_000_000000.png"), os.path.join(flat, "CLEVR_000_0.png"))
    os.remove(os.path.join(flat, "CLEVR_000_000000.json"))
    with open(os.path.join(flat, "CLEVR_000_0.json"), "w") as f:
        json.dump({"colour": [float(v) * 255 for v in val["colour"][0]], "size": 7.0}, f)
    first = concepts_folder.make_concepts_folder(flat_cfg, "train").get([0])
    np.testing.assert_allclose(first["colour"][0], val["colour"][0], atol=1e-6)
    assert first["size"][0] == pytest.approx(0.5)
    np.testing.assert_allclose(first["center"][0], val["center"][0], atol=1 / 28)


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(UserError, match="root is not set"):
        concepts_folder.make_concepts_folder(ml_collections.ConfigDict({}), "train")
    missing = str(tmp_path / "nope")
    with pytest.raises(UserError, match="does not exist"):
        concepts_folder.make_concepts_folder(ml_collections.ConfigDict({"root": missing}), "train")
    root = tmp_path / "set"
    root.mkdir()
    cfg = ml_collections.ConfigDict({"root": str(root)})
    with pytest.raises(UserError, match="no image files"):
        concepts_folder.make_concepts_folder(cfg, "train")
    arrays = src_concepts.generate_concepts(0, "val", 4, (28, 28), concept_codes.ALL_CODES)
    concepts_folder.export_concepts_folder(arrays, str(root))
    # Codes 000..011 only: the eval codes '111' filter everything out.
    cfg.codes = ("111",)
    with pytest.raises(UserError, match="no images with codes"):
        concepts_folder.make_concepts_folder(cfg, "val")
    del cfg["codes"]
    os.remove(root / "CLEVR_010_000002.json")
    with pytest.raises(
        UserError, match=r"CLEVR_010_000002\.png has no JSON.*CLEVR_010_000002\.json"
    ):
        concepts_folder.make_concepts_folder(cfg, "val")
    (root / "CLEVR_010_000002.json").write_text("{not json")
    with pytest.raises(UserError, match=r"CLEVR_010_000002\.json is not valid JSON"):
        concepts_folder.make_concepts_folder(cfg, "val")
    (root / "CLEVR_010_000002.json").write_text('{"color": [1, 0], "size": 5}')
    with pytest.raises(UserError, match=r"CLEVR_010_000002\.json: color must be 3"):
        concepts_folder.make_concepts_folder(cfg, "val")
    (root / "CLEVR_010_000002.json").write_text('{"color": [1, 0, 0]}')
    with pytest.raises(UserError, match=r"CLEVR_010_000002\.json has no 'size'"):
        concepts_folder.make_concepts_folder(cfg, "val")
    (root / "CLEVR_010_000002.json").write_text('{"color": [1, 0, 0], "size": 5}')
    assert len(concepts_folder.make_concepts_folder(cfg, "val")) == 4
    for bad in ("CLEVR_012_1.png", "CLEVR_01_1.png", "image.png", "CLEVR_011_x.png"):
        os.link(root / "CLEVR_011_000003.png", root / bad)
        with pytest.raises(UserError, match="malformed file name " + re.escape(str(root / bad))):
            concepts_folder.make_concepts_folder(cfg, "val")
        os.remove(root / bad)

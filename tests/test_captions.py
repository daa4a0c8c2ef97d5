"""Tests of the caption sources (captioned_shapes, voc_captions, flickr8k) and tokenisation.

CPU only, offline: the VOC and Flickr8k tests write tiny folders in the real layouts, and
the tokenizer tests train or hand-write their vocabularies.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re

import ml_collections
import numpy as np
import pytest
from PIL import Image

from dllab_jax.data import captions, get_source, tokenizer
from dllab_jax.data.captions import CaptionScene, Thing
from dllab_jax.data.procedural import Background
from dllab_jax.errors import UserError


def shapes_config(**overrides) -> ml_collections.ConfigDict:
    values = dict(name="captioned_shapes", seed=0, image_size=32, num_train=200, num_val=40)
    values.update(overrides)
    return ml_collections.ConfigDict(values)


# ------------------------------------------------------------------------------------------
# captioned_shapes

COLOUR = "|".join(captions.COLOURS)
KIND = "|".join(captions.KINDS)
SIZE = "|".join(captions.SIZES)
# A mention of an object: optional size, then colour and kind.
MENTION = rf"(?:(?P<{{p}}size>{SIZE}) )?(?P<{{p}}colour>{COLOUR}) (?P<{{p}}kind>{KIND})"
RELATION_PHRASES = {
    phrase: rel for rel, phrases in captions.RELATION_WORDS.items() for phrase in phrases
}
# 'X <relation> Y': the longest phrases first, so 'to the left of' is not read as 'left of'.
RELATION = re.compile(
    MENTION.format(p="a")
    + r" (?:is )?(?P<rel>"
    + "|".join(sorted(RELATION_PHRASES, key=len, reverse=True))
    + r") (?:a|an|the) "
    + MENTION.format(p="b")
)
# 'X on the left and Y on the right', 'X at the top and Y at the bottom' (relational or
# absolute positions: either way X is left of / above Y).
SIDE_BY_SIDE = re.compile(
    MENTION.format(p="a")
    + r" (?:(?P<left>on the left)|at the top) and (?:a|an) "
    + MENTION.format(p="b")
    + r" (?(left)on the right|at the bottom)\b"
)
ANY_MENTION = re.compile(MENTION.format(p=""))


def find_thing(scene: CaptionScene, match: re.Match, prefix: str) -> Thing:
    """The thing a mention names; fails if the scene has none with that colour, kind, size."""
    colour, kind = match.group(f"{prefix}colour"), match.group(f"{prefix}kind")
    things = [t for t in scene.things if t.colour == colour and t.kind == kind]
    assert len(things) == 1, (match.group(0), scene.things)
    size = match.group(f"{prefix}size")
    assert size is None or size == things[0].size, (match.group(0), things[0])
    return things[0]


def test_captioned_shapes_shapes_dtypes_and_sizes():
    source = get_source(shapes_config(), "train")
    batch = source.get(np.arange(len(source)))
    assert len(source) == 200
    assert batch["image"].shape == (200, 32, 32, 3) and batch["image"].dtype == np.uint8
    assert batch["captions"].shape == (200, 5) and batch["captions"].dtype == object
    assert all(isinstance(c, str) and c for c in batch["captions"].reshape(-1))
    assert source.info.image_shape == (32, 32, 3) and source.info.num_classes == 0
    # Other sizes: captions do not depend on the resolution.
    big = get_source(shapes_config(image_size=64, num_val=6), "val").get([0, 5])
    small = get_source(shapes_config(num_val=6), "val").get([0, 5])
    assert big["image"].shape == (2, 64, 64, 3)
    np.testing.assert_array_equal(big["captions"], small["captions"])
    three = get_source(shapes_config(captions_per_image=3, num_val=6), "val").get([0, 1])
    assert three["captions"].shape == (2, 3)


def test_captioned_shapes_deterministic_and_independent_of_split_size():
    generate = captions.generate_captioned_shapes.__wrapped__  # bypass the process cache
    a = generate(3, "train", 24, (32, 32), 5, 0.5)
    b = generate(3, "train", 24, (32, 32), 5, 0.5)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["captions"], b["captions"])
    # Example i is the same whatever the split size (odd sizes cut a swap pair).
    small = get_source(shapes_config(seed=3, num_train=11), "train").get(np.arange(11))
    np.testing.assert_array_equal(small["image"], a["image"][:11])
    np.testing.assert_array_equal(small["captions"], a["captions"][:11])
    # Random access agrees with in-order generation.
    picked = captions.sample_examples(3, "train", [7, 2, 13], 5, 0.5)
    assert [e.captions for e in picked] == [tuple(a["captions"][i]) for i in (7, 2, 13)]
    # Splits and seeds draw different examples.
    val = generate(3, "val", 24, (32, 32), 5, 0.5)
    other = generate(4, "train", 24, (32, 32), 5, 0.5)
    assert not np.array_equal(val["image"], a["image"])
    assert not np.array_equal(other["captions"], a["captions"])


def test_captions_are_true_of_their_scenes():
    examples = captions.sample_examples(0, "val", range(400), num_captions=5)
    relations_checked = 0
    for example in examples:
        scene = example.scene
        assert len(set(example.captions)) == len(example.captions) == 5
        mentioned = set()
        for caption in example.captions:
            # Every colour-kind mention names a thing of the scene with that size.
            for match in ANY_MENTION.finditer(caption):
                mentioned.add(find_thing(scene, match, "").name)
            # No kind without its colour: attributes are always bound.
            assert len(re.findall(rf"\b(?:{KIND})\b", caption)) == len(
                ANY_MENTION.findall(caption)
            ), caption
            for match in RELATION.finditer(caption):
                a, b = find_thing(scene, match, "a"), find_thing(scene, match, "b")
                assert captions.relation(a, b) == RELATION_PHRASES[match["rel"]], caption
                relations_checked += 1
            for match in SIDE_BY_SIDE.finditer(caption):
                a, b = find_thing(scene, match, "a"), find_thing(scene, match, "b")
                axis = 0 if match["left"] else 1
                assert a.center[axis] < b.center[axis], caption
                relations_checked += 1
        # Between them the captions name every object.
        assert mentioned == {t.name for t in scene.things}, (example.captions, scene.things)
        # Numbers are right.
        for caption in example.captions:
            if caption.startswith(("two shapes", "three shapes")):
                assert caption.split()[0] == {2: "two", 3: "three"}[len(scene.things)]
    assert relations_checked > 1000


def test_swap_pairs_are_near_duplicates_with_different_captions():
    examples = captions.sample_examples(0, "train", range(600), num_captions=5)
    kinds_seen = set()
    for index in range(1, len(examples), 2):
        twin, base = examples[index], examples[index - 1]
        if twin.swap is None:
            continue
        kinds_seen.add(twin.swap)
        words = lambda e: sorted(w for t in e.scene.things for w in (t.size, t.colour, t.kind))
        # Same words, same background, different binding or layout; different captions.
        assert words(twin) == words(base)
        assert twin.scene.background == base.scene.background
        assert twin.scene.things != base.scene.things
        assert set(twin.captions) != set(base.captions)
        assert not set(twin.captions) & {c for c in base.captions if " of " in c}
        assert twin.focus == base.focus
    assert kinds_seen == set(captions.SWAP_KINDS)
    # About half the pairs are swap pairs (swap_fraction 0.5), minus those with no valid swap.
    num_swaps = sum(e.swap is not None for e in examples)
    assert 90 <= num_swaps <= 160


def test_hand_made_binding_and_position_swaps_change_every_spatial_caption():
    background = Background((0.1, 0.1, 0.1), (0.2, 0.2, 0.2))
    red_circle = Thing("circle", "red", "small", (0.25, 0.5), 0.14, (1.0, 0.0, 0.0))
    blue_square = Thing("square", "blue", "large", (0.72, 0.5), 0.22, (0.0, 0.0, 1.0))
    scene = CaptionScene(background, (), (red_circle, blue_square))
    for kind in ("colour", "position", "size"):
        swapped = captions.swap(scene, 0, 1, kind)
        assert swapped is not None
        for seed in range(20):
            original = captions.make_captions(np.random.default_rng(seed), scene, 5, (0, 1))
            other = captions.make_captions(np.random.default_rng(seed), swapped, 5, (0, 1))
            assert set(original) != set(other)
            if kind == "colour":  # every caption binds colours to kinds
                assert all(a != b for a, b in zip(original, other))
    swapped = captions.swap(scene, 0, 1, "colour")
    assert swapped.things[0].name == "blue circle" and swapped.things[1].name == "red square"
    focus_caption = captions.make_captions(np.random.default_rng(0), swapped, 1, (0, 1))[0]
    assert "small blue circle" in focus_caption and "large red square" in focus_caption
    # Swaps that change nothing, overlap or leave the image are refused.
    red_square = dataclasses.replace(blue_square, colour="red")
    assert (
        captions.swap(CaptionScene(background, (), (red_circle, red_square)), 0, 1, "colour")
        is None
    )
    near_edge = dataclasses.replace(red_circle, center=(0.14, 0.5))
    assert (
        captions.swap(CaptionScene(background, (), (near_edge, blue_square)), 0, 1, "position")
        is None
    )


def test_caption_corpus_and_bad_config():
    config = shapes_config(num_train=30)
    corpus = captions.caption_corpus(config)
    source_captions = get_source(config, "train").get(np.arange(30))["captions"]
    assert corpus == list(source_captions.reshape(-1))
    with pytest.raises(UserError, match="captions_per_image"):
        get_source(shapes_config(captions_per_image=11), "train")
    with pytest.raises(UserError, match="swap_fraction"):
        get_source(shapes_config(swap_fraction=1.5), "train")
    with pytest.raises(UserError, match="unknown split"):
        get_source(shapes_config(), "holdout")
    with pytest.raises(UserError, match="caption_corpus"):
        captions.caption_corpus(ml_collections.ConfigDict(dict(name="shapes")))


# ------------------------------------------------------------------------------------------
# voc_captions


def write_jpeg(path: str, rgb: tuple[int, int, int], size: tuple[int, int]) -> None:
    """A JPEG whose left half is `rgb` and right half black, `size` = (width, height)."""
    w, h = size
    pixels = np.zeros((h, w, 3), np.uint8)
    pixels[:, : w // 2] = rgb
    Image.fromarray(pixels).save(path, quality=95)


@pytest.fixture
def voc_root(tmp_path):
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
    corpus = captions.caption_corpus(voc_config(root, captions_json))
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


# ------------------------------------------------------------------------------------------
# flickr8k

FLICKR_NAMES = [f"{1000 + k}_abc.jpg" for k in range(5)]


@pytest.fixture
def flickr_root(tmp_path):
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


# ------------------------------------------------------------------------------------------
# tokenizer


def test_train_wordpiece_round_trip_and_tokenize(tmp_path):
    corpus = captions.caption_corpus(shapes_config(num_train=300))
    folder = str(tmp_path / "wordpiece")
    trained = tokenizer.train_wordpiece(corpus, 300, folder)
    loaded = tokenizer.load_tokenizer(folder)
    n = len(trained)
    assert n == len(loaded) <= 300
    ids = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]"]
    assert trained.convert_tokens_to_ids(ids) == [0, 1, 2, 3, 4, n - 2, n - 1]
    assert loaded.convert_tokens_to_ids(ids) == [0, 1, 2, 3, 4, n - 2, n - 1]
    assert loaded.bos_token == "[DEC]" and loaded.enc_token_id == n - 1
    a = tokenizer.tokenize(trained, corpus, 35)
    b = tokenizer.tokenize(loaded, corpus, 35)
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    assert a["input_ids"].dtype == np.int32 and a["attention_mask"].dtype == np.int32
    # Whole words of the corpus are single tokens; case is folded.
    out = tokenizer.tokenize(loaded, ["A Small RED circle", "", " ".join(["a red circle"] * 9)], 8)
    assert out["input_ids"].shape == (3, 8)
    assert loaded.convert_ids_to_tokens(out["input_ids"][0].tolist()) == [
        "[CLS]",
        "a",
        "small",
        "red",
        "circle",
        "[SEP]",
        "[PAD]",
        "[PAD]",
    ]
    np.testing.assert_array_equal(out["attention_mask"][0], [1, 1, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(out["input_ids"][1], [2, 3, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(out["attention_mask"][1], [1, 1, 0, 0, 0, 0, 0, 0])
    # Truncated: 6 word pieces, still ending in [SEP], no padding.
    assert loaded.convert_ids_to_tokens(out["input_ids"][2].tolist()) == [
        "[CLS]",
        "a",
        "red",
        "circle",
        "a",
        "red",
        "circle",
        "[SEP]",
    ]
    assert out["attention_mask"][2].all()
    with pytest.raises(UserError, match="vocab_size"):
        tokenizer.train_wordpiece(corpus, 20, str(tmp_path / "too_small"))


def test_load_hand_written_bert_vocab(tmp_path):
    vocab = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "circle"]
    vocab += ["##s", "left", "of", "the", "."]
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = {"do_lower_case": True, "tokenizer_class": "BertTokenizer", "model_max_length": 512}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    loaded = tokenizer.load_tokenizer(str(folder))
    assert len(loaded) == len(vocab) + 2
    assert loaded.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [len(vocab), len(vocab) + 1]
    assert loaded.bos_token_id == len(vocab) and loaded.pad_token_id == 0
    out = tokenizer.tokenize(loaded, ["A red Circles left of the circle."], 12)
    expected = [3, 6, 7, 8, 9, 10, 11, 12, 8, 13, 4, 0]
    np.testing.assert_array_equal(out["input_ids"][0], expected)
    np.testing.assert_array_equal(out["attention_mask"][0], [1] * 11 + [0])
    # Unknown words map to [UNK]; the added tokens are atomic.
    out = tokenizer.tokenize(loaded, ["[DEC] a zebra [ENC]"], 6)
    np.testing.assert_array_equal(out["input_ids"][0], [3, len(vocab), 6, 2, len(vocab) + 1, 4])
    with pytest.raises(UserError, match="nowhere"):
        tokenizer.load_tokenizer(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=re.escape("vocab.txt")):
        tokenizer.load_tokenizer(str(tmp_path / "empty"))

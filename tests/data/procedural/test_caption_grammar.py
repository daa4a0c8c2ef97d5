"""The caption grammar of `captioned_shapes` (dllab_jax/data/procedural/caption_grammar.py):
every caption is true of its scene, and swaps change the captions."""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from dllab_jax.data.procedural import caption_examples, caption_grammar, caption_scenes
from dllab_jax.data.procedural.caption_scenes import CaptionScene, Thing
from dllab_jax.data.procedural.scene import Background

COLOUR = "|".join(caption_scenes.COLOURS)


KIND = "|".join(caption_scenes.KINDS)


SIZE = "|".join(caption_scenes.SIZES)


# A mention of an object: optional size, then colour and kind.
MENTION = rf"(?:(?P<{{p}}size>{SIZE}) )?(?P<{{p}}colour>{COLOUR}) (?P<{{p}}kind>{KIND})"


RELATION_PHRASES = {
    phrase: rel for rel, phrases in caption_grammar.RELATION_WORDS.items() for phrase in phrases
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


def test_captions_are_true_of_their_scenes():
    examples = caption_examples.sample_examples(0, "val", range(400), num_captions=5)
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
                assert caption_scenes.relation(a, b) == RELATION_PHRASES[match["rel"]], caption
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


def test_hand_made_binding_and_position_swaps_change_every_spatial_caption():
    background = Background((0.1, 0.1, 0.1), (0.2, 0.2, 0.2))
    red_circle = Thing("circle", "red", "small", (0.25, 0.5), 0.14, (1.0, 0.0, 0.0))
    blue_square = Thing("square", "blue", "large", (0.72, 0.5), 0.22, (0.0, 0.0, 1.0))
    scene = CaptionScene(background, (), (red_circle, blue_square))
    for kind in ("colour", "position", "size"):
        swapped = caption_scenes.swap(scene, 0, 1, kind)
        assert swapped is not None
        for seed in range(20):
            original = caption_grammar.make_captions(np.random.default_rng(seed), scene, 5, (0, 1))
            other = caption_grammar.make_captions(np.random.default_rng(seed), swapped, 5, (0, 1))
            assert set(original) != set(other)
            if kind == "colour":  # every caption binds colours to kinds
                assert all(a != b for a, b in zip(original, other))
    swapped = caption_scenes.swap(scene, 0, 1, "colour")
    assert swapped.things[0].name == "blue circle" and swapped.things[1].name == "red square"
    focus_caption = caption_grammar.make_captions(np.random.default_rng(0), swapped, 1, (0, 1))[0]
    assert "small blue circle" in focus_caption and "large red square" in focus_caption
    # Swaps that change nothing, overlap or leave the image are refused.
    red_square = dataclasses.replace(blue_square, colour="red")
    assert (
        caption_scenes.swap(CaptionScene(background, (), (red_circle, red_square)), 0, 1, "colour")
        is None
    )
    near_edge = dataclasses.replace(red_circle, center=(0.14, 0.5))
    assert (
        caption_scenes.swap(
            CaptionScene(background, (), (near_edge, blue_square)), 0, 1, "position"
        )
        is None
    )

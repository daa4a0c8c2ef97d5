"""The caption grammar of `captioned_shapes`: distinct, true, paraphrased captions of a scene.

Every caption is a true statement about the scene, names every object it mentions by at
least its colour and kind (unique in a scene), and states relations only for clear pairs
(`caption_scenes.relation`). Captions cover attributes, spatial relations and absolute
positions; `make_captions` draws K distinct ones per scene.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dllab_jax.data.procedural.caption_scenes import CaptionScene, Thing, clear_pairs, relation

MAX_CAPTIONS_PER_IMAGE = 10

RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("left of", "to the left of", "on the left of"),
    "right": ("right of", "to the right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
INVERSE = {"left": "right", "right": "left", "above": "below", "below": "above"}
NUMBER_WORDS = {2: "two", 3: "three"}
# Wordings of a relation between two things, as (prefix, definite articles, verb): 'there is a
# red circle left of a blue square', 'the red circle is left of the blue square'. One more
# wording, side by side ('... on the left and ... on the right'), follows them.
RELATION_TEMPLATES: tuple[tuple[str, bool, str], ...] = (
    ("", False, ""),
    ("", True, "is "),
    ("there is ", False, ""),
    ("a picture of ", False, ""),
)
# Wordings of a one-thing scene, as (prefix, with its position, suffix): 'one shape: a red
# circle in the top left'; None is 'a single (small) red circle'.
SINGLE_TEMPLATES: tuple[tuple[str, bool, str] | None, ...] = (
    ("", False, ""),
    ("", True, ""),
    None,
    ("one shape: ", True, ""),
    ("there is ", True, ""),
    ("a picture of ", False, ""),
    ("", False, " on a dark background"),
)


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def pick_one(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _np(rng: np.random.Generator, thing: Thing, definite: bool = False) -> str:
    """'a small red circle', 'a red circle', or with `definite` 'the (small) red circle'."""
    phrase = thing.full_name if rng.random() < 0.5 else thing.name
    return f"the {phrase}" if definite else _article(phrase)


def region(thing: Thing) -> tuple[str, str]:
    """(row, column) of the centre in a 3x3 grid: ('top'|'middle'|'bottom', 'left'|...)."""
    x, y = thing.center
    col = "left" if x < 0.38 else "right" if x > 0.62 else "centre"
    row = "top" if y < 0.38 else "bottom" if y > 0.62 else "middle"
    return row, col


def _position_phrase(rng: np.random.Generator, thing: Thing) -> str:
    row, col = region(thing)
    if row == "middle" and col == "centre":
        return pick_one(rng, ("in the centre", "in the middle"))
    if row == "middle":
        return pick_one(rng, (f"on the {col}", f"at the {col}", f"on the {col} side"))
    if col == "centre":
        return pick_one(rng, (f"at the {row}", f"near the {row}"))
    return pick_one(rng, (f"in the {row} {col}", f"in the {row} {col} corner"))


def _relation_caption(
    rng: np.random.Generator,
    a: Thing,
    b: Thing,
    full: bool = False,
    template: int | None = None,
) -> str:
    """A caption stating the relation of a clear pair, in either direction.

    `full` names both with size, colour and kind ('a small red circle left of ...');
    `template` picks the wording (default random).
    """
    if rng.random() < 0.5:
        a, b = b, a
    words = pick_one(rng, RELATION_WORDS[relation(a, b)])
    if full:
        return f"{_article(a.full_name)} {words} {_article(b.full_name)}"
    if template is None:
        template = int(rng.integers(len(RELATION_TEMPLATES) + 1))
    if template < len(RELATION_TEMPLATES):
        prefix, definite, verb = RELATION_TEMPLATES[template]
        return f"{prefix}{_np(rng, a, definite)} {verb}{words} {_np(rng, b, definite)}"
    # The last wording, side by side: name the first of the pair in reading order first.
    rel = relation(a, b)
    if rel in ("right", "below"):
        a, b, rel = b, a, INVERSE[rel]
    if rel == "left":
        return f"{_np(rng, a)} on the left and {_np(rng, b)} on the right"
    return f"{_np(rng, a)} at the top and {_np(rng, b)} at the bottom"


def _list_caption(rng: np.random.Generator, things: Sequence[Thing]) -> str:
    """A caption naming every object, without positions."""
    order = rng.permutation(len(things))
    names = [_np(rng, things[k]) for k in order]
    listed = " and ".join(names) if len(names) == 2 else f"{', '.join(names[:-1])} and {names[-1]}"
    template = int(rng.integers(3))
    if template == 0:
        return listed
    if template == 1:
        return f"{NUMBER_WORDS[len(things)]} shapes: {listed}"
    return f"{listed} on a dark background"


def _multi_spatial_caption(rng: np.random.Generator, things: Sequence[Thing]) -> str:
    """A caption of a multi-object scene with a relation or absolute positions."""
    pairs = clear_pairs(things)
    choice = int(rng.integers(4))
    if choice == 0 or not pairs:
        order = rng.permutation(len(things))
        parts = [f"{_np(rng, things[k])} {_position_phrase(rng, things[k])}" for k in order]
        return (
            " and ".join(parts) if len(parts) == 2 else f"{', '.join(parts[:-1])} and {parts[-1]}"
        )
    i, j = pick_one(rng, pairs)
    caption = _relation_caption(rng, things[i], things[j])
    if len(things) == 2 or choice == 1:
        return caption
    if choice == 2 and len(pairs) > 1:
        # Two relations, the second about another pair.
        k, m = pick_one(rng, [p for p in pairs if p != (i, j)])
        return f"{caption}, and {_relation_caption(rng, things[k], things[m], template=1)}"
    (other,) = set(range(len(things))) - {i, j}
    return f"{caption}, and {_np(rng, things[other])} {_position_phrase(rng, things[other])}"


def _single_caption(rng: np.random.Generator, thing: Thing) -> str:
    template = SINGLE_TEMPLATES[int(rng.integers(len(SINGLE_TEMPLATES)))]
    if template is None:  # 'a single red circle': no article, no position
        return f"a single {thing.full_name if rng.random() < 0.5 else thing.name}"
    prefix, positioned, suffix = template
    phrase = _np(rng, thing)
    if positioned:
        phrase = f"{phrase} {_position_phrase(rng, thing)}"
    return f"{prefix}{phrase}{suffix}"


def make_captions(
    rng: np.random.Generator,
    scene: CaptionScene,
    num_captions: int,
    focus: tuple[int, int] | None = None,
) -> list[str]:
    """`num_captions` distinct captions of `scene`, in random order.

    Args:
      rng: the example's generator.
      scene: the scene to describe.
      num_captions: how many (at most `MAX_CAPTIONS_PER_IMAGE`).
      focus: a clear pair (i, j) whose relation one caption states with sizes, colours and
        kinds in full. The two scenes of a swap pair share it, so that caption is false of the
        other scene and their caption sets always differ.

    Returns:
      The captions. A multi-object scene has at most one caption without spatial information
      (a list of the objects); the others state relations or positions, so most of them
      change when two objects swap places.
    """
    things = scene.things
    captions: list[str] = []
    if focus is not None:
        captions.append(_relation_caption(rng, things[focus[0]], things[focus[1]], full=True))
    allow_list = len(things) > 1 and num_captions >= 3
    for _ in range(100 * num_captions):
        if len(captions) == num_captions:
            break
        is_list = False
        if len(things) == 1:
            caption = _single_caption(rng, things[0])
        elif allow_list and rng.random() < 0.25:
            caption, is_list = _list_caption(rng, things), True
        else:
            caption = _multi_spatial_caption(rng, things)
        if caption not in captions:
            captions.append(caption)
            allow_list = allow_list and not is_list
    if len(captions) < num_captions:
        raise RuntimeError(f"could not make {num_captions} distinct captions of {scene}")
    return [captions[k] for k in rng.permutation(len(captions))]

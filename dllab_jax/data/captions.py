"""Images with captions: a procedural default and readers for PASCAL VOC and Flickr8k.

Every source here returns `{'image': [n, H, W, 3] uint8, 'captions': [n, K] object}` from
`get`, where K is fixed per source and a missing caption is ''. They serve image-text
retrieval (E7) and captioning (E6).

- `captioned_shapes`: offline and procedural. Scenes of one to three shapes with a named
  colour, a size and a position on a dark, mildly cluttered background, rendered with
  `procedural.rasterize`, each with K distinct paraphrased captions generated from the scene
  (attributes, spatial relations, absolute positions). About half of the examples come in
  near-duplicate pairs: the second scene is the first with two objects' colours, sizes or
  positions swapped, so a model must bind attributes and relations to tell them apart.
- `voc_captions`: PASCAL VOC 2012 images with captions from a JSON file (the course handout).
- `flickr8k`: the Flickr8k layout `Images/` + `captions.txt`.

`caption_corpus(data_config)` returns the training captions of any of them, to train a
tokenizer on (see `tokenizer.py`).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import os
from collections.abc import Callable, Sequence

import ml_collections
import numpy as np

from dllab_jax.data.base import ArraySource, SourceInfo, image_size_key, int_key
from dllab_jax.data.cache import cached_arrays
from dllab_jax.data.folder import read_images
from dllab_jax.data.procedural import (
    Background,
    Scene,
    SceneObject,
    example_rng,
    rasterize,
    sample_distractors,
    to_uint8,
)
from dllab_jax.data.registry import register
from dllab_jax.errors import UserError

SPLITS: tuple[str, ...] = ("train", "val", "test")

# --------------------------------------------------------------------------------------------
# captioned_shapes: vocabulary.

# Shape kinds (keys of `procedural.SDFS`) chosen to stay distinct at 32 px and small sizes.
KINDS: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "ring")
# Saturated or bright named colours, far apart in RGB and from the dark background.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.72, 0.15),
    "blue": (0.15, 0.35, 1.00),
    "yellow": (0.98, 0.92, 0.10),
    "purple": (0.62, 0.18, 0.85),
    "orange": (1.00, 0.55, 0.00),
    "white": (0.97, 0.97, 0.97),
    "cyan": (0.10, 0.90, 0.92),
}
# Circumradius ranges as fractions of the image side: 'small' is about 4.5 px and 'large'
# about 7.5 px at 32 px, so the two never look alike.
SIZES: dict[str, tuple[float, float]] = {"small": (0.13, 0.155), "large": (0.21, 0.245)}

# Probability of 1, 2 and 3 objects in an independent scene and in the base of a swap pair.
NUM_OBJECTS_P = (0.2, 0.4, 0.4)
SWAP_BASE_NUM_OBJECTS_P = (0.0, 0.5, 0.5)
SWAP_KINDS: tuple[str, ...] = ("colour", "position", "size")
# A pair has a spatial relation only when one axis dominates by this factor (within about
# 34 degrees of it), so "left of" is never said of a diagonal pair.
CLEAR_RATIO = 1.5
# Gap between the circumscribing circles of two objects (fraction of the side): no overlap.
GAP = 0.015
# Centres stay `MARGIN * radius` inside the border (below 1: corners the shape does not fill
# may touch the border).
MARGIN = 0.9
COLOUR_JITTER = 0.05
ROTATION_JITTER = 0.3  # radians, so a square stays a square and a heart upright
MAX_CAPTIONS_PER_IMAGE = 10
# Pixels rendered per rasteriser call: bounds the [objects, H, W] temporaries to ~100 MB.
_PIXELS_PER_CHUNK = 2**20

RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("left of", "to the left of", "on the left of"),
    "right": ("right of", "to the right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
INVERSE = {"left": "right", "right": "left", "above": "below", "below": "above"}
NUMBER_WORDS = {2: "two", 3: "three"}


@dataclasses.dataclass(frozen=True)
class Thing:
    """A captioned object: its symbolic attributes and where it is drawn.

    Attributes:
      kind: one of `KINDS`.
      colour: a key of `COLOURS`.
      size: 'small' or 'large'.
      center: (x, y) as fractions of the image width and height; y points down.
      radius: circumradius as a fraction of the image side, in `SIZES[size]`.
      rgb: the drawn colour: `COLOURS[colour]` plus a small jitter.
      rotation: counter-clockwise, radians.
    """

    kind: str
    colour: str
    size: str
    center: tuple[float, float]
    radius: float
    rgb: tuple[float, float, float]
    rotation: float = 0.0

    @property
    def name(self) -> str:
        """'red circle': unique within a scene, so 'the red circle' refers to one object."""
        return f"{self.colour} {self.kind}"

    @property
    def full_name(self) -> str:
        return f"{self.size} {self.colour} {self.kind}"

    def to_object(self) -> SceneObject:
        return SceneObject(self.kind, self.rgb, self.center, self.radius, self.rotation)


@dataclasses.dataclass(frozen=True)
class CaptionScene:
    """A scene as captions see it: background clutter (never mentioned) and the things."""

    background: Background
    clutter: tuple[SceneObject, ...]
    things: tuple[Thing, ...]

    def to_scene(self) -> Scene:
        """The scene to rasterise: clutter behind, things on top in order."""
        return Scene(self.background, (*self.clutter, *(t.to_object() for t in self.things)))


# --------------------------------------------------------------------------------------------
# captioned_shapes: sampling scenes.


def relation(a: Thing, b: Thing) -> str | None:
    """Where `a` is relative to `b`: 'left', 'right', 'above', 'below', or None if diagonal."""
    dx = a.center[0] - b.center[0]
    dy = a.center[1] - b.center[1]
    if abs(dx) >= CLEAR_RATIO * abs(dy):
        return "left" if dx < 0 else "right"
    if abs(dy) >= CLEAR_RATIO * abs(dx):
        return "above" if dy < 0 else "below"
    return None


def clear_pairs(things: Sequence[Thing]) -> list[tuple[int, int]]:
    """Index pairs (i < j) of things with a clear spatial relation."""
    return [
        (i, j)
        for i in range(len(things))
        for j in range(i + 1, len(things))
        if relation(things[i], things[j]) is not None
    ]


def _valid_layout(things: Sequence[Thing]) -> bool:
    """Inside the image, no two objects overlap, no two share colour and kind."""
    for t in things:
        if not all(MARGIN * t.radius <= c <= 1.0 - MARGIN * t.radius for c in t.center):
            return False
    for i, a in enumerate(things):
        for b in things[i + 1 :]:
            if a.name == b.name:
                return False
            distance = np.hypot(a.center[0] - b.center[0], a.center[1] - b.center[1])
            if distance < a.radius + b.radius + GAP:
                return False
    return True


def _place(rng: np.random.Generator, radii: np.ndarray, tries: int = 64) -> np.ndarray | None:
    """Centres [m, 2] for objects of circumradii `radii` [m]: inside the image, apart by the
    sum of their radii plus `GAP`, and for two objects in a clear relation. None if none of
    `tries` random layouts (drawn at once, vectorised) fits.
    """
    m = len(radii)
    low = MARGIN * radii[:, None]
    centres = low + rng.random((tries, m, 2)) * (1.0 - 2.0 * low)  # [tries, m, 2]
    delta = centres[:, :, None, :] - centres[:, None, :, :]  # [tries, m, m, 2]
    distance = np.hypot(delta[..., 0], delta[..., 1])
    apart = distance >= radii[:, None] + radii[None, :] + GAP
    ok = np.all(apart | np.eye(m, dtype=bool), axis=(1, 2))
    if m == 2:
        dx, dy = np.abs(delta[:, 0, 1, 0]), np.abs(delta[:, 0, 1, 1])
        ok &= (dx >= CLEAR_RATIO * dy) | (dy >= CLEAR_RATIO * dx)
    valid = np.flatnonzero(ok)
    return centres[valid[0]] if len(valid) else None


def _sample_things(rng: np.random.Generator, num_objects: int) -> tuple[Thing, ...]:
    """`num_objects` things with distinct (colour, kind), placed without overlap.

    Rejection sampling of the centres; a 2-object scene must also have a clear relation, so
    every 2-object scene can be captioned with one. If 256 random layouts fail (three large
    objects rarely fit), the largest object is made small.
    """
    colour_names = tuple(COLOURS)
    names: list[str] = []
    kinds, colours = [], []
    while len(names) < num_objects:
        kind = KINDS[int(rng.integers(len(KINDS)))]
        colour = colour_names[int(rng.integers(len(colour_names)))]
        if f"{colour} {kind}" not in names:
            names.append(f"{colour} {kind}")
            kinds.append(kind)
            colours.append(colour)
    sizes = ["small" if u < 0.5 else "large" for u in rng.random(num_objects)]
    radii = np.array([rng.uniform(*SIZES[size]) for size in sizes])
    while True:
        for _ in range(4):
            centres = _place(rng, radii)
            if centres is not None:
                break
        if centres is not None:
            break
        largest = int(np.argmax(radii))
        sizes[largest] = "small"
        radii[largest] = rng.uniform(*SIZES["small"])
    palette = np.array([COLOURS[c] for c in colours])
    rgb = np.clip(palette + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, (num_objects, 3)), 0, 1)
    rotation = rng.uniform(-ROTATION_JITTER, ROTATION_JITTER, num_objects)
    return tuple(
        Thing(
            kinds[k],
            colours[k],
            sizes[k],
            (float(centres[k, 0]), float(centres[k, 1])),
            float(radii[k]),
            (float(rgb[k, 0]), float(rgb[k, 1]), float(rgb[k, 2])),
            float(rotation[k]),
        )
        for k in range(num_objects)
    )


def _sample_background(rng: np.random.Generator) -> tuple[Background, tuple[SceneObject, ...]]:
    """A dark, slightly tinted grey gradient with texture, and 1-3 muted strokes and 0-2 blobs.

    Kept dark and unsaturated so that every named colour (white included) stands out and no
    clutter can be taken for a coloured shape.
    """
    # Channels stay within [0, 0.4] here and within [0.05, 0.65] for the clutter: no clipping.
    level0, level1 = rng.uniform(0.05, 0.35, 2)
    tint = rng.uniform(-0.05, 0.05, 3)
    background = Background(
        tuple((level0 + tint).tolist()),
        tuple((level1 + tint).tolist()),
        angle=float(rng.uniform(0.0, 2.0 * np.pi)),
        blotch_std=0.04,
        noise_std=0.025,
        texture_seed=int(rng.integers(2**31)),
    )
    clutter = sample_distractors(rng, int(rng.integers(1, 4)), int(rng.integers(0, 3)))
    greys = 0.5 * (level0 + level1) + rng.uniform(0.08, 0.2, len(clutter))
    muted = tuple(
        dataclasses.replace(obj, rgb=tuple((grey + 0.15 * (np.asarray(obj.rgb) - 0.5)).tolist()))
        for obj, grey in zip(clutter, greys)
    )
    return background, muted


def sample_scene(
    rng: np.random.Generator, num_objects_p: Sequence[float] = NUM_OBJECTS_P
) -> CaptionScene:
    """An independent `CaptionScene` with 1-3 things drawn with probabilities `num_objects_p`."""
    num_objects = 1 + int(rng.choice(3, p=num_objects_p))
    background, clutter = _sample_background(rng)
    return CaptionScene(background, clutter, _sample_things(rng, num_objects))


def swap(scene: CaptionScene, i: int, j: int, swap_kind: str) -> CaptionScene | None:
    """`scene` with things i and j exchanging colour, position or size; None if that is not a
    valid scene (overlap, out of the image, a repeated colour and kind) or changes nothing.
    """
    things = list(scene.things)
    a, b = things[i], things[j]
    if swap_kind == "colour":
        if a.colour == b.colour:
            return None
        things[i] = dataclasses.replace(a, colour=b.colour, rgb=b.rgb)
        things[j] = dataclasses.replace(b, colour=a.colour, rgb=a.rgb)
    elif swap_kind == "position":
        things[i] = dataclasses.replace(a, center=b.center)
        things[j] = dataclasses.replace(b, center=a.center)
    elif swap_kind == "size":
        if a.size == b.size:
            return None
        things[i] = dataclasses.replace(a, size=b.size, radius=b.radius)
        things[j] = dataclasses.replace(b, size=a.size, radius=a.radius)
    else:
        raise ValueError(f"unknown swap kind {swap_kind!r}; use one of {SWAP_KINDS}")
    if not _valid_layout(things):
        return None
    return dataclasses.replace(scene, things=tuple(things))


# --------------------------------------------------------------------------------------------
# captioned_shapes: captions. Every caption is a true statement about the scene, names every
# object it mentions by at least its colour and kind (unique in a scene), and states
# relations only for clear pairs.


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _pick(rng: np.random.Generator, options: Sequence):
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
        return _pick(rng, ("in the centre", "in the middle"))
    if row == "middle":
        return _pick(rng, (f"on the {col}", f"at the {col}", f"on the {col} side"))
    if col == "centre":
        return _pick(rng, (f"at the {row}", f"near the {row}"))
    return _pick(rng, (f"in the {row} {col}", f"in the {row} {col} corner"))


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
    words = _pick(rng, RELATION_WORDS[relation(a, b)])
    if full:
        return f"{_article(a.full_name)} {words} {_article(b.full_name)}"
    if template is None:
        template = int(rng.integers(5))
    if template == 0:
        return f"{_np(rng, a)} {words} {_np(rng, b)}"
    if template == 1:
        return f"{_np(rng, a, True)} is {words} {_np(rng, b, True)}"
    if template == 2:
        return f"there is {_np(rng, a)} {words} {_np(rng, b)}"
    if template == 3:
        return f"a picture of {_np(rng, a)} {words} {_np(rng, b)}"
    # Side by side: name the first of the pair in reading order first.
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
    i, j = _pick(rng, pairs)
    caption = _relation_caption(rng, things[i], things[j])
    if len(things) == 2 or choice == 1:
        return caption
    if choice == 2 and len(pairs) > 1:
        # Two relations, the second about another pair.
        k, m = _pick(rng, [p for p in pairs if p != (i, j)])
        return f"{caption}, and {_relation_caption(rng, things[k], things[m], template=1)}"
    (other,) = set(range(len(things))) - {i, j}
    return f"{caption}, and {_np(rng, things[other])} {_position_phrase(rng, things[other])}"


def _single_caption(rng: np.random.Generator, thing: Thing) -> str:
    template = int(rng.integers(7))
    if template == 0:
        return _np(rng, thing)
    if template == 1:
        return f"{_np(rng, thing)} {_position_phrase(rng, thing)}"
    if template == 2:
        return f"a single {thing.full_name if rng.random() < 0.5 else thing.name}"
    if template == 3:
        return f"one shape: {_np(rng, thing)} {_position_phrase(rng, thing)}"
    if template == 4:
        return f"there is {_np(rng, thing)} {_position_phrase(rng, thing)}"
    if template == 5:
        return f"a picture of {_np(rng, thing)}"
    return f"{_np(rng, thing)} on a dark background"


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


# --------------------------------------------------------------------------------------------
# captioned_shapes: examples and the source.


@dataclasses.dataclass(frozen=True)
class Example:
    """One `captioned_shapes` example before rendering.

    Attributes:
      scene: what is drawn.
      captions: its distinct captions.
      swap: for the second example of a swap pair, what was swapped ('colour', 'position',
        'size') relative to the example before it; None otherwise.
      focus: the pair (i, j) of `scene.things` one caption states in full (the swapped pair of
        a swap pair), or None.
    """

    scene: CaptionScene
    captions: tuple[str, ...]
    swap: str | None = None
    focus: tuple[int, int] | None = None


def _random_focus(rng: np.random.Generator, scene: CaptionScene) -> tuple[int, int] | None:
    pairs = clear_pairs(scene.things)
    return _pick(rng, pairs) if pairs else None


def _sample_pair(
    seed: int, split: str, pair: int, num_captions: int, swap_fraction: float
) -> list[Example]:
    """Examples 2 * pair and 2 * pair + 1.

    The first draw of example 2p's generator decides whether the pair is a swap pair; if so,
    example 2p has two or three objects and example 2p + 1 is the same image with one swap
    of two things (chosen by example 2p's generator, so both examples agree on it) and its
    own captions. Otherwise 2p + 1 is independent. Either way an example depends only on
    (seed, split, index).
    """
    rng = example_rng(seed, split, 2 * pair)
    is_swap_pair = rng.random() < swap_fraction
    base = sample_scene(rng, SWAP_BASE_NUM_OBJECTS_P if is_swap_pair else NUM_OBJECTS_P)
    twin, swap_kind, focus = None, None, None
    if is_swap_pair:
        options = [(p, kind) for p in clear_pairs(base.things) for kind in SWAP_KINDS]
        for k in rng.permutation(len(options)):
            (i, j), kind = options[k]
            twin = swap(base, i, j, kind)
            if twin is not None:
                swap_kind, focus = kind, (i, j)
                break
    if focus is None:
        focus = _random_focus(rng, base)
    examples = [Example(base, tuple(make_captions(rng, base, num_captions, focus)), None, focus)]
    rng = example_rng(seed, split, 2 * pair + 1)
    if twin is None:
        scene = sample_scene(rng)
        focus = _random_focus(rng, scene)
    else:
        scene = twin
    captions = tuple(make_captions(rng, scene, num_captions, focus))
    examples.append(Example(scene, captions, swap_kind, focus))
    return examples


def sample_examples(
    seed: int,
    split: str,
    indices: Sequence[int],
    num_captions: int = 5,
    swap_fraction: float = 0.5,
) -> list[Example]:
    """The `captioned_shapes` examples `indices` of `split`, unrendered.

    Args:
      seed: the data seed.
      split: 'train', 'val', 'test' (any name gets its own stream).
      indices: example indices.
      num_captions: captions per example.
      swap_fraction: fraction of (even, odd) index pairs whose odd example is a swap of the
        even one.
    """
    examples: list[Example] = []
    pair_examples, last_pair = [], None
    for index in indices:
        pair, odd = divmod(int(index), 2)
        if pair != last_pair:  # in-order requests sample each pair once
            pair_examples = _sample_pair(seed, split, pair, num_captions, swap_fraction)
            last_pair = pair
        examples.append(pair_examples[odd])
    return examples


def render(scenes: Sequence[CaptionScene], image_size: tuple[int, int]) -> np.ndarray:
    """Rasterises scenes in chunks to [n, H, W, 3] uint8."""
    h, w = image_size
    images = np.empty((len(scenes), h, w, 3), np.uint8)
    chunk = max(1, _PIXELS_PER_CHUNK // (h * w))
    for start in range(0, len(scenes), chunk):
        batch = [s.to_scene() for s in scenes[start : start + chunk]]
        float_images, _ = rasterize(batch, (h, w))
        images[start : start + len(batch)] = to_uint8(float_images)
    return images


def _captions_array(captions: Sequence[Sequence[str]], num_captions: int) -> np.ndarray:
    """[n, num_captions] object array of str, '' where an example has fewer captions."""
    array = np.full((len(captions), num_captions), "", dtype=object)
    for i, caps in enumerate(captions):
        caps = list(caps)[:num_captions]
        array[i, : len(caps)] = caps
    return array


@functools.lru_cache(maxsize=8)
@cached_arrays  # and on disk, across runs (dllab_jax/data/cache.py)
def generate_captioned_shapes(
    seed: int,
    split: str,
    num_examples: int,
    image_size: tuple[int, int],
    num_captions: int,
    swap_fraction: float,
) -> dict[str, np.ndarray]:
    """The `captioned_shapes` examples 0..num_examples-1 of `split`, cached for the process.

    Returns:
      {'image': [n, H, W, 3] uint8, 'captions': [n, num_captions] object (str)}, read-only.
    """
    examples = sample_examples(seed, split, range(num_examples), num_captions, swap_fraction)
    images = render([e.scene for e in examples], image_size)
    captions = _captions_array([e.captions for e in examples], num_captions)
    images.setflags(write=False)
    captions.setflags(write=False)
    return {"image": images, "captions": captions}


def _check_split(split: str, name: str) -> None:
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r} for data source {name!r}; use one of {SPLITS}")


def _shapes_settings(data_config: ml_collections.ConfigDict) -> tuple[int, int, float]:
    """(seed, captions per image, swap fraction) of `captioned_shapes`, validated."""
    seed = int_key(data_config, "seed", 0, 0)
    num_captions = int_key(data_config, "captions_per_image", 5, 1)
    if num_captions > MAX_CAPTIONS_PER_IMAGE:
        raise UserError(
            f"config.data.captions_per_image must be at most {MAX_CAPTIONS_PER_IMAGE} for "
            f"captioned_shapes, got {num_captions}"
        )
    swap_fraction = data_config.get("swap_fraction", 0.5)
    if isinstance(swap_fraction, bool) or not (
        isinstance(swap_fraction, int | float) and 0.0 <= swap_fraction <= 1.0
    ):
        raise UserError(f"config.data.swap_fraction must be in [0, 1], got {swap_fraction!r}")
    return seed, num_captions, float(swap_fraction)


SHAPES_SPLIT_SIZES = {"train": 20000, "val": 1000, "test": 1000}


@register("captioned_shapes")
def make_captioned_shapes(data_config: ml_collections.ConfigDict, split: str) -> ArraySource:
    """The `captioned_shapes` source for `split` ('train', 'val' or 'test').

    Reads `data_config.seed` (default 0), `image_size` (int or (H, W), default 32),
    `num_train` / `num_val` / `num_test` (defaults 20000 / 1000 / 1000),
    `captions_per_image` (K, default 5, at most 10) and `swap_fraction` (default 0.5: the
    fraction of index pairs (2p, 2p + 1) whose second image is the first with two objects'
    colours, positions or sizes swapped).

    `get` returns {'image': [n, H, W, 3] uint8, 'captions': [n, K] object (str)}.
    """
    _check_split(split, "captioned_shapes")
    seed, num_captions, swap_fraction = _shapes_settings(data_config)
    num_examples = int_key(data_config, f"num_{split}", SHAPES_SPLIT_SIZES[split], 0)
    image_size = image_size_key(data_config, 32, minimum=8)
    arrays = generate_captioned_shapes(
        seed, split, num_examples, image_size, num_captions, swap_fraction
    )
    return ArraySource(arrays, SourceInfo(0, (), (*image_size, 3)))


# --------------------------------------------------------------------------------------------
# Captioned image files: VOC 2012 and Flickr8k.


class CaptionFileSource:
    """Image files with captions: names and captions in memory, pixels read and resized by `get`.

    Attributes:
      ids: one name per image (VOC id, Flickr file name).
      paths: the image files.
      captions: [n, K] object array of str, '' where an image has fewer than K captions.
      info: `SourceInfo` with `image_shape` (H, W, 3) and no classes.
    """

    def __init__(
        self,
        ids: Sequence[str],
        paths: Sequence[str],
        captions: np.ndarray,
        image_size: tuple[int, int],
    ):
        self.ids = list(ids)
        self.paths = list(paths)
        self.captions = captions
        self.info = SourceInfo(0, (), (*image_size, 3))

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, indices: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """Reads `indices`: {'image': [n, H, W, 3] uint8, 'captions': [n, K] object}."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        images = read_images([self.paths[i] for i in indices], self.info.image_shape[:2])
        return {"image": images, "captions": self.captions[indices]}


def _root(data_config: ml_collections.ConfigDict, name: str, what: str) -> str:
    root = data_config.get("root", None)
    if not root:
        raise UserError(f"config.data.root is not set; point it at {what} for {name!r}")
    root = os.path.expanduser(str(root))
    if not os.path.isdir(root):
        raise UserError(f"{name} root {root} does not exist; set config.data.root to {what}")
    return root


def _require_dir(path: str, what: str) -> str:
    if not os.path.isdir(path):
        raise UserError(f"folder {path} does not exist; {what}")
    return path


def _require_file(path: str, what: str) -> str:
    if not os.path.isfile(path):
        raise UserError(f"file {path} does not exist; {what}")
    return path


def _captioned_subset(
    names: Sequence[str],
    captions: dict[str, list[str]],
    data_config: ml_collections.ConfigDict,
    listed_in: str,
    captions_from: str,
) -> list[str]:
    """`names` that have captions; a UserError for the others unless skip_uncaptioned."""
    missing = [n for n in names if not captions.get(n)]
    if missing and not data_config.get("skip_uncaptioned", False):
        raise UserError(
            f"{len(missing)} of {len(names)} images listed in {listed_in} have no caption in "
            f"{captions_from} (first: {', '.join(missing[:5])}); add captions or set "
            "config.data.skip_uncaptioned=True"
        )
    kept = [n for n in names if captions.get(n)]
    if not kept:
        raise UserError(f"no image listed in {listed_in} has a caption in {captions_from}")
    return kept


def _check_images_exist(image_dir: str, files: Sequence[str]) -> None:
    present = set(os.listdir(image_dir))
    missing = [f for f in files if f not in present]
    if missing:
        raise UserError(
            f"{len(missing)} image files are missing, first {os.path.join(image_dir, missing[0])}"
        )


def _num_captions(data_config: ml_collections.ConfigDict, captions: Sequence[Sequence[str]]) -> int:
    """K: config.data.captions_per_image if set (extra captions are dropped), else the most
    any image of the split has."""
    value = data_config.get("captions_per_image", None)
    if value is None:
        return max(len(c) for c in captions)
    return int_key(data_config, "captions_per_image", 5, 1)


def read_caption_json(path: str) -> dict[str, list[str]]:
    """A JSON object image id -> caption or list of captions, as id -> non-empty captions.

    Ids may carry the '.jpg' extension; it is dropped so they match VOC's id lists.
    """
    _require_file(path, "set config.data.captions_json to the captions JSON file")
    try:
        with open(path, encoding="utf-8") as f:
            mapping = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(mapping, dict):
        raise UserError(f"{path} must hold a JSON object image id -> caption(s)")
    captions = {}
    for key, value in mapping.items():
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise UserError(
                f"{path}: the captions of {key!r} must be a string or a list of strings, "
                f"got {value!r}"
            )
        image_id = key.strip()
        if image_id.lower().endswith(".jpg"):
            image_id = image_id[:-4]
        captions.setdefault(image_id, []).extend(v.strip() for v in values if v.strip())
    return captions


# VOC has no public test annotations, so 'test' reads the val list, as the course does.
VOC_SPLIT_LISTS = {"train": "train", "val": "val", "test": "val"}


@register("voc_captions")
def make_voc_captions(data_config: ml_collections.ConfigDict, split: str) -> CaptionFileSource:
    """PASCAL VOC 2012 segmentation images with captions from a JSON file.

    Layout: `data_config.root` is the `VOCdevkit/VOC2012` folder, with `JPEGImages/<id>.jpg`
    and `ImageSets/Segmentation/{train,val}.txt`; `data_config.captions_json` maps each id
    (optionally with '.jpg') to a caption or a list of captions. Split 'train' reads the ids
    of train.txt, 'val' those of val.txt; 'test' is val again, since VOC publishes no test
    annotations.

    Reads `root`, `captions_json`, `image_size` (int or (H, W), default 384 as BLIP;
    images are resized bilinearly as they are read), `skip_uncaptioned` (default False: ids
    without a caption are an error) and `captions_per_image` (K; default: the most any
    image of the split has).
    """
    _check_split(split, "voc_captions")
    root = _root(data_config, "voc_captions", "the VOCdevkit/VOC2012 folder")
    image_size = image_size_key(data_config, 384)
    image_dir = _require_dir(
        os.path.join(root, "JPEGImages"), "config.data.root must be the VOCdevkit/VOC2012 folder"
    )
    list_file = _require_file(
        os.path.join(root, "ImageSets", "Segmentation", f"{VOC_SPLIT_LISTS[split]}.txt"),
        "config.data.root must be the VOCdevkit/VOC2012 folder",
    )
    with open(list_file, encoding="utf-8") as f:
        ids = [line.strip() for line in f if line.strip()]
    captions_json = data_config.get("captions_json", None)
    if not captions_json:
        raise UserError(
            "config.data.captions_json is not set; point it at the JSON file mapping VOC "
            "image ids to captions"
        )
    captions_json = os.path.expanduser(str(captions_json))
    by_id = read_caption_json(captions_json)
    ids = _captioned_subset(ids, by_id, data_config, list_file, captions_json)
    _check_images_exist(image_dir, [f"{i}.jpg" for i in ids])
    captions = [by_id[i] for i in ids]
    paths = [os.path.join(image_dir, f"{i}.jpg") for i in ids]
    array = _captions_array(captions, _num_captions(data_config, captions))
    return CaptionFileSource(ids, paths, array, image_size)


FLICKR_SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}


def read_flickr_captions(path: str) -> dict[str, list[str]]:
    """`captions.txt` (CSV, header 'image,caption') as image file name -> captions, in file
    order. An unquoted caption with commas spreads over several fields; they are rejoined."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["image", "caption"]:
        raise UserError(f"{path} must be a CSV file with the header 'image,caption'")
    captions: dict[str, list[str]] = {}
    for row in rows[1:]:
        if not row or not row[0].strip():
            continue
        caption = ",".join(row[1:]).strip()
        entry = captions.setdefault(row[0].strip(), [])
        if caption:
            entry.append(caption)
    return captions


def _flickr_split_file(root: str, split: str) -> str | None:
    """The official split file of `split`, if the official files are there (in root or in
    root/Flickr8k_text, where the original archive puts them)."""
    for folder in (root, os.path.join(root, "Flickr8k_text")):
        if any(os.path.isfile(os.path.join(folder, f)) for f in FLICKR_SPLIT_FILES.values()):
            return _require_file(
                os.path.join(folder, FLICKR_SPLIT_FILES[split]),
                f"the official split files in {folder} are incomplete",
            )
    return None


@register("flickr8k")
def make_flickr8k(data_config: ml_collections.ConfigDict, split: str) -> CaptionFileSource:
    """Flickr8k: `root/Images/*.jpg` and `root/captions.txt` (CSV 'image,caption', five rows
    per image).

    Splits: the official `Flickr_8k.{train,dev,test}Images.txt` if they are in root (or
    root/Flickr8k_text); otherwise the captioned images sorted by name, the last `num_test`
    for 'test', the `num_val` before them for 'val' and the rest for 'train'.

    Reads `root`, `image_size` (int or (H, W), default 384; bilinear resize on read),
    `num_val` / `num_test` (defaults 1000 / 1000; only without the official files),
    `skip_uncaptioned` (default False) and `captions_per_image` (K; default: the most any
    image of the split has).
    """
    _check_split(split, "flickr8k")
    root = _root(data_config, "flickr8k", "the folder holding Images/ and captions.txt")
    image_size = image_size_key(data_config, 384)
    image_dir = _require_dir(
        os.path.join(root, "Images"), "the flickr8k layout is root/Images/*.jpg"
    )
    captions_file = _require_file(
        os.path.join(root, "captions.txt"), "the flickr8k layout has root/captions.txt"
    )
    by_name = read_flickr_captions(captions_file)
    split_file = _flickr_split_file(root, split)
    if split_file is not None:
        with open(split_file, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        names = _captioned_subset(names, by_name, data_config, split_file, captions_file)
    else:
        names = sorted(n for n, c in by_name.items() if c)
        num_val = int_key(data_config, "num_val", 1000, 0)
        num_test = int_key(data_config, "num_test", 1000, 0)
        num_train = len(names) - num_val - num_test
        if num_train < 1:
            raise UserError(
                f"{captions_file} has {len(names)} captioned images, not more than num_val + "
                f"num_test = {num_val + num_test}; lower config.data.num_val / num_test"
            )
        bounds = {"train": (0, num_train), "val": (num_train, num_train + num_val)}
        start, stop = bounds.get(split, (num_train + num_val, len(names)))
        names = names[start:stop]
    _check_images_exist(image_dir, names)
    captions = [by_name[n] for n in names]
    paths = [os.path.join(image_dir, n) for n in names]
    array = _captions_array(captions, _num_captions(data_config, captions))
    return CaptionFileSource(names, paths, array, image_size)


# --------------------------------------------------------------------------------------------
# Corpus for tokenizers.

_CORPUS_SOURCES: dict[str, Callable] = {
    "voc_captions": make_voc_captions,
    "flickr8k": make_flickr8k,
}


def caption_corpus(data_config: ml_collections.ConfigDict) -> list[str]:
    """Every training caption of the source `data_config.name` (default 'captioned_shapes'),
    in example order, repeats kept (they are word frequencies to a tokenizer trainer).

    For `captioned_shapes` the scenes are sampled but not rendered.
    """
    name = data_config.get("name", "captioned_shapes")
    if name == "captioned_shapes":
        seed, num_captions, swap_fraction = _shapes_settings(data_config)
        num_train = int_key(data_config, "num_train", SHAPES_SPLIT_SIZES["train"], 0)
        examples = sample_examples(seed, "train", range(num_train), num_captions, swap_fraction)
        return [c for e in examples for c in e.captions]
    if name not in _CORPUS_SOURCES:
        raise UserError(
            f"caption_corpus reads captioned_shapes, {', '.join(_CORPUS_SOURCES)}; "
            f"config.data.name is {name!r}"
        )
    source = _CORPUS_SOURCES[name](data_config, "train")
    return [c for c in source.captions.reshape(-1) if c]

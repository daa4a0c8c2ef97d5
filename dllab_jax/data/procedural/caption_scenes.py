"""The captioned scenes of `captioned_shapes`: what they hold and how they are sampled.

Scenes of one to three shapes, each with a named colour, a size and a position, on a dark,
mildly cluttered background (`scene.Background` and distractors); rendered with the shared
rasteriser (`raster.py`). `swap` makes the near-duplicate twin of a scene (two objects'
colours, sizes or positions exchanged), so a model must bind attributes and relations to tell
the two apart. The captions of a scene come from `caption_grammar.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from dllab_jax.data.procedural.scene import Background, Scene, SceneObject, sample_distractors

# --------------------------------------------------------------------------------------------
# Vocabulary.

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
# Sampling scenes.


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

"""The examples of `captioned_shapes`: scenes with captions, about half in swap pairs.

Examples come in index pairs (2p, 2p + 1). In a swap pair the second scene is the first with
two objects' colours, sizes or positions exchanged (`caption_scenes.swap`), and one caption of
each states the swapped pair's relation in full, so their caption sets always differ. Every
example is a pure function of (seed, split, index): random access agrees with in-order
generation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from dllab_jax.data.checks import example_rng
from dllab_jax.data.procedural.caption_grammar import make_captions, pick_one
from dllab_jax.data.procedural.caption_scenes import (
    NUM_OBJECTS_P,
    SWAP_BASE_NUM_OBJECTS_P,
    SWAP_KINDS,
    CaptionScene,
    clear_pairs,
    sample_scene,
    swap,
)


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
    return pick_one(rng, pairs) if pairs else None


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

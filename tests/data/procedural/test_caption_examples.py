"""The swap pairs of `captioned_shapes` (dllab_jax/data/procedural/caption_examples.py)."""

from __future__ import annotations

from dllab_jax.data.procedural import caption_examples, caption_scenes


def test_swap_pairs_are_near_duplicates_with_different_captions():
    examples = caption_examples.sample_examples(0, "train", range(600), num_captions=5)
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
    assert kinds_seen == set(caption_scenes.SWAP_KINDS)
    # About half the pairs are swap pairs (swap_fraction 0.5), minus those with no valid swap.
    num_swaps = sum(e.swap is not None for e in examples)
    assert 90 <= num_swaps <= 160

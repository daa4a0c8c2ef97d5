"""BLEU as the handout computes it, against values worked out by hand."""

import math

import pytest

from dllab_jax.evaluators.bleu import bleu_scores


def test_identical_caption_scores_one():
    out = bleu_scores(["A red circle on the left"], [["a red circle on the left"]])
    assert out == pytest.approx({"bleu1": 1.0, "bleu2": 1.0, "bleu3": 1.0, "bleu4": 1.0})


def test_modified_precisions_by_hand():
    # hyp "a b c d" vs ref "a b c e": p1 = 3/4, p2 = 2/3, p3 = 1/2, p4 = 0; equal lengths.
    out = bleu_scores(["a b c d"], [["a b c e"]])
    assert out["bleu1"] == pytest.approx(3 / 4)
    assert out["bleu2"] == pytest.approx(math.sqrt(3 / 4 * 2 / 3))
    assert out["bleu3"] == pytest.approx((3 / 4 * 2 / 3 * 1 / 2) ** (1 / 3))
    assert out["bleu4"] == pytest.approx(0.0, abs=1e-12)


def test_brevity_penalty_uses_the_closest_reference_length():
    # A perfect-precision 3-word hypothesis. With one 5-word reference: BP = exp(1 - 5/3).
    short = bleu_scores(["a b c"], [["a b c d e"]])
    assert short["bleu3"] == pytest.approx(math.exp(1 - 5 / 3))
    # Adding a 2-word reference makes 2 the closest length (|3-2| < |3-5|): no penalty.
    closest = bleu_scores(["a b c"], [["a b c d e", "a b"]])
    assert closest["bleu3"] == pytest.approx(1.0)


def test_corpus_level_pools_counts_over_images():
    # Corpus BLEU-1 pools clipped matches (2 + 0) over hypothesis lengths (2 + 2) = 0.5, and
    # the corpus lengths (4 vs 4) give no brevity penalty.
    out = bleu_scores(["a b", "c d"], [["a b"], ["e f"]])
    assert out["bleu1"] == pytest.approx(0.5)

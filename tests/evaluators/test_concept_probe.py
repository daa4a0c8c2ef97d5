"""Concept probe: its accuracy on hand-made predictions, the seen / unseen means, and the
per-code scores of a hand-set probe."""

import numpy as np
import pytest

from dllab_jax.evaluators import concept_probe


def test_probe_accuracy_on_hand_made_predictions():
    # Code '011' = (shape 0, colour 1, size 1). Three samples' (shape, colour, size)
    # predictions: all right (3/3), shape wrong (2/3), all wrong (0/3) -> 5/9.
    predictions = np.array([[0, 1, 1], [1, 1, 1], [1, 0, 0]])
    assert concept_probe.probe_accuracy(predictions, "011") == pytest.approx(5 / 9)
    assert concept_probe.probe_accuracy(np.array([[1, 0, 1]]), "101") == 1.0
    assert concept_probe.probe_accuracy(np.array([[0, 1, 0]]), "101") == 0.0
    per_code = {"000": 1.0, "001": 0.5, "011": 0.25, "111": 0.0}
    groups = concept_probe.seen_unseen_accuracy(per_code, ["000", "001"], ["011", "111"])
    assert groups == {"seen_acc": pytest.approx(0.75), "unseen_acc": pytest.approx(0.125)}


def test_score_samples_with_a_probe_that_always_predicts_011():
    # Zero weights and biases favouring (shape 0, colour 1, size 1): every sample of any code
    # is predicted '011', so a code scores the fraction of its bits that match.
    params = {
        "kernel": np.zeros((2 * 2 * 3, 6), np.float32),
        "bias": np.array([1, 0, 0, 1, 0, 1], np.float32),
    }
    samples = {code: np.zeros((3, 2, 2, 3), np.float32) for code in ("011", "111", "100")}
    out = concept_probe.score_samples(params, samples, seen=("011",), unseen=("111", "100"))
    assert out["acc_011"] == 1.0
    assert out["acc_111"] == pytest.approx(2 / 3)
    assert out["acc_100"] == 0.0
    assert out["acc_111_shape"] == 0.0 and out["acc_111_colour"] == 1.0
    assert out["seen_acc"] == 1.0
    assert out["unseen_acc"] == pytest.approx(1 / 3)

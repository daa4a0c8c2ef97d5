"""Retrieval evaluator: Recall@K and ranks on hand-made similarity matrices, and the top
matches a report shows."""

import numpy as np
import pytest

from dllab_jax.evaluators import recall
from dllab_jax.evaluators.recall import retrieval_metrics


def test_recall_on_a_perfect_and_a_constant_matrix():
    perfect = retrieval_metrics(np.eye(4), np.arange(4))
    assert perfect["i2t_R@1"] == perfect["t2i_R@1"] == 1.0
    assert perfect["i2t_mean_rank"] == perfect["t2i_median_rank"] == 1.0
    # All scores equal: ties count against the model, so nothing is found at rank 1.
    constant = retrieval_metrics(np.zeros((4, 4)), np.arange(4))
    assert constant["i2t_R@1"] == constant["t2i_R@1"] == 0.0
    assert constant["t2i_mean_rank"] == 4.0


def test_recall_with_several_captions_per_image():
    # 3 images, 5 captions: captions 0,1 -> image 0; 2,3 -> image 1; 4 -> image 2.
    caption_image = np.array([0, 0, 1, 1, 2])
    similarity = np.array(
        [
            [0.9, 0.1, 0.8, 0.0, 0.3],  # image 0: own captions 0.9, 0.1 -> best ranks 1st
            [0.7, 0.5, 0.1, 0.4, 0.6],  # image 1: own 0.1, 0.4 -> best ranks 4th
            [0.2, 0.5, 0.3, 0.4, 0.1],  # image 2: own 0.1 -> ranks 5th
        ]
    )
    out = retrieval_metrics(similarity, caption_image, ks=(1, 4))
    # i2t ranks: [1, 4, 5]
    assert out["i2t_R@1"] == pytest.approx(1 / 3)
    assert out["i2t_R@4"] == pytest.approx(2 / 3)
    assert out["i2t_mean_rank"] == pytest.approx(10 / 3)
    # t2i ranks, column by column (ties count against): c0 -> 1; c1 (0.1 vs 0.5, 0.5) -> 3;
    # c2 (0.1 vs 0.8, 0.3) -> 3; c3 (0.4 tied with 0.4) -> 2; c4 (0.1 vs 0.3, 0.6) -> 3
    assert out["t2i_R@1"] == pytest.approx(1 / 5)
    assert out["t2i_R@4"] == 1.0
    assert out["t2i_median_rank"] == 3.0
    assert out["t2i_mean_rank"] == pytest.approx(12 / 5)
    assert out["mean_R@1"] == pytest.approx((1 / 3 + 1 / 5) / 2)


def test_top_images_rank_images_for_evenly_spread_queries():
    # 3 images, 5 captions; column q holds caption q's score for each image.
    caption_image = np.array([0, 0, 1, 1, 2])
    similarity = np.array(
        [
            [0.9, 0.1, 0.8, 0.0, 0.3],
            [0.7, 0.5, 0.1, 0.4, 0.6],
            [0.2, 0.6, 0.3, 0.4, 0.1],
        ]
    )
    top = recall.top_images(similarity, caption_image, num_queries=3)
    np.testing.assert_array_equal(top["queries"], [0, 2, 4])
    np.testing.assert_array_equal(top["top"], [[0, 1, 2], [0, 2, 1], [1, 0, 2]])
    np.testing.assert_array_equal(
        top["correct"], [[True, False, False], [False, False, True], [False, False, True]]
    )

"""Metrics as sums: every evaluation step returns sums and counts, finalised once per split.

Sums (not means) make padded batches exact: masked-out examples add zero, and a split's
metrics are the same whatever its size or the batch size. Functions here are pure and work
under jit; `finalize_*` run on host with numpy.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax


def add_sums(total: Mapping | None, update: Mapping) -> dict:
    """Adds two trees of sums; `total=None` starts a new accumulation."""
    if total is None:
        return dict(update)
    return jax.tree.map(jnp.add, dict(total), dict(update))


def confusion_matrix(
    labels: jnp.ndarray, predictions: jnp.ndarray, num_classes: int, weights: jnp.ndarray
) -> jnp.ndarray:
    """Counts of (label, prediction) pairs, weighted (0 drops an example or pixel).

    Args:
      labels, predictions: integer arrays of the same shape; labels outside
        [0, num_classes) (e.g. 255 = ignore) are dropped.
      weights: same shape, 1 to count, 0 to drop.

    Returns:
      [num_classes, num_classes] float32, rows = labels, columns = predictions.
    """
    labels = labels.reshape(-1)
    predictions = predictions.reshape(-1)
    weights = weights.reshape(-1).astype(jnp.float32)
    valid = (labels >= 0) & (labels < num_classes)
    weights = jnp.where(valid, weights, 0.0)
    flat_index = jnp.where(valid, labels, 0) * num_classes + predictions
    counts = jnp.zeros(num_classes * num_classes, jnp.float32).at[flat_index].add(weights)
    return counts.reshape(num_classes, num_classes)


def classification_sums(
    logits: jnp.ndarray, labels: jnp.ndarray, mask: jnp.ndarray, num_classes: int
) -> dict[str, jnp.ndarray]:
    """Sums for accuracy, per-class accuracy and cross-entropy.

    Args:
      logits: [B, num_classes]; labels: [B] int; mask: [B] float, 1 = real example.
    """
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    predictions = jnp.argmax(logits, axis=-1)
    return {
        "count": mask.sum(),
        "loss_sum": (losses * mask).sum(),
        "correct": ((predictions == labels) * mask).sum(),
        "confusion": confusion_matrix(labels, predictions, num_classes, mask),
    }


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Recall of each class, NaN for a class with no examples."""
    confusion = np.asarray(confusion, np.float64)
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(confusion) / support


def finalize_classification(sums: Mapping) -> dict[str, float]:
    """accuracy, per_class_accuracy (unweighted mean over classes present) and loss."""
    sums = jax.device_get(sums)
    count = float(sums["count"])
    return {
        "accuracy": float(sums["correct"]) / count,
        "per_class_accuracy": float(np.nanmean(per_class_accuracy(sums["confusion"]))),
        "loss": float(sums["loss_sum"]) / count,
    }


def mean_of_steps(step_metrics: list[Mapping]) -> dict[str, float]:
    """Averages per-step scalar training metrics over a logging window."""
    step_metrics = jax.device_get(step_metrics)
    keys = step_metrics[0].keys()
    return {k: float(np.mean([float(m[k]) for m in step_metrics])) for k in keys}


def retrieval_metrics(
    similarity: np.ndarray, caption_image: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@K, median and mean rank, image->text and text->image.

    Args:
      similarity: [num_images, num_captions] scores (higher = more similar).
      caption_image: [num_captions] int, the image each caption describes (an image may have
        several captions).
      ks: the K of Recall@K.

    Returns:
      {"i2t_R@K", "t2i_R@K", "i2t_median_rank", "i2t_mean_rank", "t2i_median_rank",
       "t2i_mean_rank", "mean_R@1"}: image->text ranks each image's best-ranked true caption
      among all captions; text->image ranks each caption's image among all images. Ranks
      start at 1; a tie counts against the model (a constant similarity gets the worst rank).
    """
    similarity = np.asarray(similarity, np.float64)
    caption_image = np.asarray(caption_image, np.int64)
    num_images, num_captions = similarity.shape
    true_scores = similarity[caption_image, np.arange(num_captions)]  # [num_captions]
    # Text -> image: how many images score at least as high as the caption's own image.
    t2i_rank = (similarity >= true_scores[None, :]).sum(axis=0)
    # Image -> text: rank of each true caption in its image's row; keep the best per image.
    caption_rank = (similarity[caption_image] >= true_scores[:, None]).sum(axis=1)
    i2t_rank = np.full(num_images, np.iinfo(np.int64).max)
    np.minimum.at(i2t_rank, caption_image, caption_rank)
    i2t_rank = i2t_rank[np.isin(np.arange(num_images), caption_image)]  # images with captions
    out = {}
    for name, ranks in (("i2t", i2t_rank), ("t2i", t2i_rank)):
        for k in ks:
            out[f"{name}_R@{k}"] = float(np.mean(ranks <= k))
        out[f"{name}_median_rank"] = float(np.median(ranks))
        out[f"{name}_mean_rank"] = float(np.mean(ranks))
    out["mean_R@1"] = (out["i2t_R@1"] + out["t2i_R@1"]) / 2
    return out


def bleu_scores(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """Corpus BLEU-1..4 as the handout computes it: nltk's `corpus_bleu` on lower-cased
    whitespace tokens (no smoothing; the brevity penalty uses the closest reference length).

    Args:
      hypotheses: one generated caption per image, the prompt already stripped.
      references: per image, its reference captions (at least one).

    Returns:
      {"bleu1": ..., "bleu2": ..., "bleu3": ..., "bleu4": ...} in [0, 1].
    """
    import warnings

    from nltk.translate.bleu_score import corpus_bleu

    hyps = [h.lower().split() for h in hypotheses]
    refs = [[r.lower().split() for r in rs if r] for rs in references]
    out = {}
    with warnings.catch_warnings():
        # nltk warns when a corpus has no matching n-gram of some order; the score is 0 then.
        warnings.simplefilter("ignore")
        for n in (1, 2, 3, 4):
            out[f"bleu{n}"] = float(corpus_bleu(refs, hyps, weights=(1.0 / n,) * n))
    return out

"""Image-text retrieval: Recall@K and ranks both ways from a similarity matrix and the
image <-> caption correspondence."""

from __future__ import annotations

import numpy as np

from dllab_jax.evaluators import Evaluation

NUM_QUERIES = 4  # captions whose best images a report shows
TOP_K = 5  # images shown per query


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


def top_images(
    similarity: np.ndarray, caption_image: np.ndarray, num_queries: int = NUM_QUERIES
) -> dict[str, np.ndarray]:
    """The best `TOP_K` images of a few captions spread over the split.

    Returns:
      {queries: [num_queries] caption ids, top: [num_queries, TOP_K] image ids (best first),
       correct: [num_queries, TOP_K] bool, the image is the caption's own}.
    """
    queries = np.linspace(0, len(caption_image) - 1, num_queries).astype(int)
    top = np.argsort(-similarity[:, queries].T, axis=1)[:, :TOP_K]
    correct = top == np.asarray(caption_image)[queries][:, None]
    return {"queries": queries, "top": top, "correct": correct}


def finalize(
    image_embeds: np.ndarray, text_embeds: np.ndarray, caption_image: np.ndarray
) -> Evaluation:
    """Retrieval metrics of a split from every image's and caption's embedding.

    Args:
      image_embeds: [num_images, D]; text_embeds: [num_captions, D] (L2-normalised, so the
        dot product is the cosine similarity); caption_image: [num_captions] int.

    Returns:
      Evaluation with `retrieval_metrics` and the `top_images` artifacts.
    """
    similarity = image_embeds @ text_embeds.T
    return Evaluation(
        retrieval_metrics(similarity, caption_image), top_images(similarity, caption_image)
    )

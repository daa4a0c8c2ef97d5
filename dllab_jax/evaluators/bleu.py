"""Captioning: corpus BLEU-1..4 of decoded captions against every reference of each image."""

from __future__ import annotations

from dllab_jax.evaluators import Evaluation


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


def finalize(hypotheses: list[str], references: list[list[str]]) -> Evaluation:
    """`bleu_scores`, with the captions themselves as artifacts (a report shows some)."""
    artifacts = {"hypotheses": list(hypotheses), "references": list(references)}
    return Evaluation(bleu_scores(hypotheses, references), artifacts)

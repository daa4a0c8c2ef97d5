"""Evaluators: pure functions from predictions or summed (sum, count) pairs to metrics and
the artifacts a report draws.

A task's `evaluate` runs the model over a split's batches (one jitted step per batch, sums
masked by `batch['batch_mask']`) and hands what it collected to one of these modules; the
`Evaluation` that comes back carries the split's scalar metrics and the arrays its report
draws (a confusion matrix, per-class IoU, example predictions, a similarity matrix). Nothing
is kept between calls: the loop passes the artifacts on to the task's `report`.

Modules: `accuracy` (classification), `iou` (segmentation), `psnr` (image regression),
`recall` (image-text retrieval), `bleu` (captioning) and `concept_probe` (diffusion samples
scored by linear probes).
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Evaluation(NamedTuple):
    """What one evaluation gives: scalar metrics and what a report draws from them.

    Attributes:
      metrics: {name: float}, without a split prefix (the loop adds it).
      artifacts: {name: array or list}, host values (numpy) for the report; {} when the
        report draws nothing.
    """

    metrics: dict[str, float]
    artifacts: dict[str, Any]

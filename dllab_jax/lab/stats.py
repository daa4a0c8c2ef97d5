"""Means, seed spreads and whether a seed report's finding comes out.

A difference between two rows "exceeds the spread" when it is larger than the sum of their
seed standard deviations (sample std, ddof 1): with 3 seeds each, that is roughly a
difference of two standard errors or more, and it needs no distributional assumption to read.
With one seed the spread is unknown, so nothing can exceed it.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np

from dllab_jax.lab.spec import Finding

REPRODUCED = "reproduced"
WITHIN_SPREAD = "order holds, within the seed spread"
ONE_SEED = "order holds (1 seed: spread unknown)"
NOT_REPRODUCED = "not reproduced"
MISSING = "not measured"


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A metric over seeds: mean, sample std (nan with one seed) and the number of seeds."""

    mean: float
    std: float
    n: int

    @staticmethod
    def of(values: Sequence[float]) -> Estimate | None:
        values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        if not values:
            return None
        std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
        return Estimate(float(np.mean(values)), std, len(values))

    def format(self, digits: int = 3) -> str:
        if self.n == 1:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"

    @property
    def spread(self) -> float:
        return 0.0 if self.n < 2 else self.std


@dataclasses.dataclass(frozen=True)
class Comparison:
    """`better` against `worse` on one metric: the signed margin (positive = as expected) and
    whether it exceeds the spread; `tie` marks rows expected to be about equal."""

    better: str
    worse: str
    margin: float
    spread: float
    tie: bool = False
    spread_known: bool = True  # False when a row has one seed

    @property
    def holds(self) -> bool:
        if self.tie:  # with one seed (no spread) a tie cannot be refuted
            return not self.spread_known or abs(self.margin) <= self.spread
        return self.margin > 0

    @property
    def beyond_spread(self) -> bool:
        return not self.tie and self.spread_known and self.margin > self.spread

    def describe(self, digits: int = 3) -> str:
        sign = "~" if self.tie else ">"
        mark = "yes" if self.holds else "no"
        extra = ""
        if not self.tie and self.holds and self.spread_known:
            extra = ", beyond the spread" if self.beyond_spread else ", within the spread"
        spread = f"spread {self.spread:.{digits}f}" if self.spread_known else "1 seed: no spread"
        margin = f"margin {self.margin:+.{digits}f}"
        return f"{self.better} {sign} {self.worse}: {margin} ({spread}): {mark}{extra}"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A finding checked: its status (one of the constants above) and the pairs behind it."""

    finding: Finding
    status: str
    comparisons: tuple[Comparison, ...] = ()
    detail: str = ""


def _groups(order: Sequence[str | tuple[str, ...]]) -> list[tuple[str, ...]]:
    return [(item,) if isinstance(item, str) else tuple(item) for item in order]


def _pairs(finding: Finding, estimates: Mapping[str, Estimate]) -> list[Comparison]:
    sign = 1.0 if finding.higher_is_better else -1.0
    groups = _groups(finding.order)
    out = []

    def compare(a: str, b: str, tie: bool) -> Comparison:
        ea, eb = estimates[a], estimates[b]
        known = ea.n > 1 and eb.n > 1
        return Comparison(a, b, sign * (ea.mean - eb.mean), ea.spread + eb.spread, tie, known)

    for group in groups:
        out += [compare(a, b, True) for a, b in itertools.pairwise(group)]
    for upper, lower in itertools.pairwise(groups):
        # Every row of a better group beats every row of the next: the closest pair decides.
        out += [compare(a, b, False) for a in upper for b in lower]
    return out


def check_finding(finding: Finding, estimates: Mapping[str, Estimate | None]) -> Verdict:
    """Whether our rows (metric estimates by row name) show `finding`."""
    if finding.at_least is not None:
        names = list(finding.rows) or list(estimates)
        if any(estimates.get(n) is None for n in names):
            return Verdict(finding, MISSING, detail="a row has no finished run")
        short = [n for n in names if _worse_than_bar(finding, estimates[n].mean)]
        bar = f"{'>=' if finding.higher_is_better else '<='} {finding.at_least:g}"
        if short:
            values = ", ".join(f"{n} {estimates[n].format()}" for n in short)
            return Verdict(finding, NOT_REPRODUCED, detail=f"below the bar {bar}: {values}")
        return Verdict(finding, REPRODUCED, detail=f"every row {bar}")
    named = [n for group in _groups(finding.order) for n in group]
    if any(estimates.get(n) is None for n in named):
        missing = [n for n in named if estimates.get(n) is None]
        return Verdict(finding, MISSING, detail=f"no finished run of {missing}")
    comparisons = tuple(_pairs(finding, estimates))
    if not all(c.holds for c in comparisons):
        status = NOT_REPRODUCED
    elif min(estimates[n].n for n in named) < 2:
        status = ONE_SEED
    elif all(c.beyond_spread for c in comparisons if not c.tie):
        status = REPRODUCED
    else:
        status = WITHIN_SPREAD
    return Verdict(finding, status, comparisons)


def _worse_than_bar(finding: Finding, value: float) -> bool:
    return value < finding.at_least if finding.higher_is_better else value > finding.at_least

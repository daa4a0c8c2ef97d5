"""Means, spreads and the verdict on a seed's finding, on hand-made numbers."""

import math

import pytest

from dllab_jax.lab import stats
from dllab_jax.lab.spec import Finding


def test_estimate_is_the_mean_and_the_sample_std():
    e = stats.Estimate.of([0.5, 0.7, 0.6])
    assert e.mean == pytest.approx(0.6)
    assert e.std == pytest.approx(0.1)  # ddof 1: sqrt((0.01 + 0.01 + 0) / 2)
    assert e.n == 3
    assert e.format() == "0.600 ± 0.100"
    one = stats.Estimate.of([0.25])
    assert math.isnan(one.std) and one.spread == 0.0 and one.format() == "0.250"
    assert stats.Estimate.of([None, float("nan")]) is None


def _estimates(**rows):
    return {name: stats.Estimate.of(values) for name, values in rows.items()}


ORDER = Finding("a > b > c", "m", order=("a", "b", "c"))


def test_an_order_beyond_the_spread_is_reproduced():
    # a - b = 0.1 > 0.01 + 0.01; b - c = 0.1 > 0.02.
    verdict = stats.check_finding(ORDER, _estimates(a=[0.61, 0.59], b=[0.51, 0.49], c=[0.41, 0.39]))
    assert verdict.status == stats.REPRODUCED
    margins = {(c.better, c.worse): round(c.margin, 6) for c in verdict.comparisons}
    assert margins == {("a", "b"): 0.1, ("b", "c"): 0.1}
    assert all(c.beyond_spread for c in verdict.comparisons)


def test_an_order_inside_the_spread_holds_but_is_not_reproduced():
    # a - b = 0.02 < 0.0283 (each std 0.01414).
    verdict = stats.check_finding(ORDER, _estimates(a=[0.53, 0.51], b=[0.51, 0.49], c=[0.1, 0.1]))
    assert verdict.status == stats.WITHIN_SPREAD
    ab = verdict.comparisons[0]
    assert ab.holds and not ab.beyond_spread
    assert ab.spread == pytest.approx(2 * math.sqrt(2e-4))


def test_a_reversed_pair_is_not_reproduced_and_one_seed_is_said():
    verdict = stats.check_finding(ORDER, _estimates(a=[0.4], b=[0.5], c=[0.1]))
    assert verdict.status == stats.NOT_REPRODUCED
    assert [c.holds for c in verdict.comparisons] == [False, True]
    verdict = stats.check_finding(ORDER, _estimates(a=[0.6], b=[0.5], c=[0.1]))
    assert verdict.status == stats.ONE_SEED
    # One seed has no spread: the line says so instead of "within the spread 0.000".
    assert verdict.comparisons[0].describe() == "a > b: margin +0.100 (1 seed: no spread): yes"
    two = stats.check_finding(ORDER, _estimates(a=[0.6, 0.6], b=[0.5, 0.5], c=[0.1, 0.1]))
    assert two.comparisons[0].describe().endswith("(spread 0.000): yes, beyond the spread")


def test_missing_rows_and_lower_is_better():
    assert stats.check_finding(ORDER, _estimates(a=[0.6], b=[0.5])).status == stats.MISSING
    loss = Finding("a has the lower loss", "loss", order=("a", "b"), higher_is_better=False)
    verdict = stats.check_finding(loss, _estimates(a=[1.0, 1.02], b=[2.0, 2.02]))
    assert verdict.status == stats.REPRODUCED
    assert verdict.comparisons[0].margin == pytest.approx(1.0)


def test_groups_are_ties_and_every_member_must_beat_the_next_group():
    finding = Finding("a ~ b, both > c", "m", order=(("a", "b"), "c"))
    verdict = stats.check_finding(finding, _estimates(a=[0.6, 0.62], b=[0.61, 0.6], c=[0.3, 0.31]))
    assert verdict.status == stats.REPRODUCED
    assert [(c.better, c.worse, c.tie) for c in verdict.comparisons] == [
        ("a", "b", True),
        ("a", "c", False),
        ("b", "c", False),
    ]
    # b far above a: the tie does not hold.
    verdict = stats.check_finding(finding, _estimates(a=[0.4, 0.41], b=[0.8, 0.81], c=[0.3, 0.31]))
    assert verdict.status == stats.NOT_REPRODUCED


def test_a_bar_every_row_must_reach():
    bar = Finding("accuracy 1.0", "acc", at_least=0.9, rows=("a", "b"))
    assert stats.check_finding(bar, _estimates(a=[0.95], b=[0.92])).status == stats.REPRODUCED
    verdict = stats.check_finding(bar, _estimates(a=[0.95], b=[0.5, 0.6]))
    assert verdict.status == stats.NOT_REPRODUCED
    assert "b 0.550 ± 0.071" in verdict.detail

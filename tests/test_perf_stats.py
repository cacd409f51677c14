"""Unit tests for perf.stats (no builder needed)."""

from __future__ import annotations

import math
import random

import pytest

from perf import stats


def test_median_quantiles_mad():
    assert stats.median([3, 1, 2]) == 2
    assert stats.median([4, 1, 2, 3]) == 2.5
    assert stats.quantile([1, 2, 3, 4, 5], 0.25) == 2.0
    assert stats.iqr([1, 2, 3, 4, 5]) == 2.0
    assert stats.mad([1, 2, 3, 4, 100]) == 1.0
    with pytest.raises(ValueError):
        stats.median([])


@pytest.mark.parametrize(
    ("x", "y", "u", "p"),
    [
        # exact two-sided p-values: complete separation of 3 vs 3 is 2/C(6,3) = 0.1,
        # of 5 vs 5 is 2/C(10,5) = 2/252; the 5 vs 4 case is the classic textbook example
        # (U = 17, p = 0.1111).
        ([1, 2, 3], [4, 5, 6], 0.0, 0.1),
        ([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], 0.0, 2 / 252),
        ([19, 22, 16, 29, 24], [20, 11, 17, 12], 17.0, 0.111111),
        ([6, 7, 8], [1, 2, 3], 9.0, 0.1),
    ],
)
def test_mann_whitney_exact_known_values(x, y, u, p):
    res = stats.mann_whitney_u(x, y)
    assert res.exact
    assert res.u == u
    assert res.p == pytest.approx(p, abs=1e-5)


def test_mann_whitney_identical_samples_not_significant():
    res = stats.mann_whitney_u([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0])
    assert not res.exact  # ties force the normal approximation
    assert res.p > 0.5


def test_mann_whitney_normal_approximation_close_to_exact():
    rng = random.Random(3)
    x = [rng.gauss(0, 1) for _ in range(15)]
    y = [rng.gauss(1.5, 1) for _ in range(15)]
    exact = stats.mann_whitney_u(x, y)
    approx = stats.mann_whitney_u(x, y, method="asymptotic")
    assert exact.exact and not approx.exact
    assert approx.u == exact.u
    assert approx.p == pytest.approx(exact.p, rel=0.1)
    assert exact.p < 0.05


def test_u_distribution_sums_to_binomial():
    dist = stats._u_distribution(4, 6)
    assert sum(dist) == math.comb(10, 4)
    assert dist == dist[::-1]  # symmetric


def test_bootstrap_ci_is_seeded_and_brackets_ratio():
    base = [1.0, 1.02, 0.99, 1.01, 1.0]
    head = [1.5, 1.52, 1.49, 1.5, 1.51]
    a = stats.bootstrap_ratio_ci(base, head, seed=1)
    b = stats.bootstrap_ratio_ci(base, head, seed=1)
    assert a == b
    assert a.paired and a.lo <= a.ratio <= a.hi
    assert a.lo > 1.4
    assert stats.verdict(a) == stats.SLOWER
    assert stats.verdict(stats.bootstrap_ratio_ci(head, base)) == stats.FASTER


def test_bootstrap_ci_coverage_on_synthetic_data():
    """95 % CIs of the median of paired ratios should cover the true median ratio in roughly
    95 % of experiments (percentile bootstrap on small n under-covers a little)."""
    rng = random.Random(42)
    true_ratio = 1.2
    trials, covered = 200, 0
    for t in range(trials):
        base = [1.0 + rng.uniform(-0.05, 0.05) for _ in range(15)]
        head = [b * true_ratio * math.exp(rng.gauss(0, 0.05)) for b in base]
        ci = stats.bootstrap_ratio_ci(base, head, seed=t, n_boot=400)
        covered += ci.lo <= true_ratio <= ci.hi
    assert 0.85 <= covered / trials <= 1.0


def test_unpaired_bootstrap_when_lengths_differ():
    ci = stats.bootstrap_ratio_ci([1.0, 1.1, 0.9], [2.0, 2.1, 1.9, 2.0], seed=0)
    assert not ci.paired
    assert ci.ratio == pytest.approx(2.0)


def test_verdict_needs_min_effect_and_abs_floor():
    ci = stats.RatioCI(1.03, 1.01, 1.05, True, 5)
    assert stats.verdict(ci, min_effect=0.05) == stats.NO_CHANGE
    assert stats.verdict(ci, min_effect=0.01) == stats.SLOWER
    big = stats.RatioCI(1.5, 1.3, 1.7, True, 5)
    assert stats.verdict(big, base_median=0.010, head_median=0.015, min_abs=0.02) == \
        stats.NO_CHANGE
    assert stats.verdict(big, base_median=1.0, head_median=1.5, min_abs=0.02) == stats.SLOWER
    straddle = stats.RatioCI(1.2, 0.9, 1.5, True, 3)
    assert stats.verdict(straddle) == stats.NO_CHANGE


def test_wording_names_a_change_the_floor_discounts():
    plus21 = stats.RatioCI(1.21, 1.07, 1.49, True, 5)  # +21 %, CI x1.07..x1.49
    decision = stats.verdict(plus21, base_median=0.010, head_median=0.0121, min_abs=0.05)
    moved = stats.direction(plus21)
    assert (decision, moved) == (stats.NO_CHANGE, stats.SLOWER)
    assert stats.wording(decision, moved, "0.05 s") == "slower (under the 0.05 s floor)"
    minus = stats.RatioCI(0.7, 0.6, 0.8, True, 5)
    assert stats.wording(stats.NO_CHANGE, stats.direction(minus), "0.02 s") == \
        "faster (under the 0.02 s floor)"
    assert stats.wording(stats.SLOWER, stats.SLOWER, "0.05 s") == "slower"
    straddle = stats.RatioCI(1.21, 0.9, 1.49, True, 5)
    assert stats.wording(stats.NO_CHANGE, stats.direction(straddle), "0.05 s") == stats.NO_CHANGE

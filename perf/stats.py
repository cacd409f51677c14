"""Robust statistics for timing samples: median, MAD/IQR, a seeded bootstrap CI of the median
of paired ratios, Mann-Whitney U (exact for small samples, normal approximation otherwise) and
the verdict rule used by `compare` and `gate`.

Timings of whole builds are few (3–10 per side) and skewed (a slow outlier is common, a fast
one is not), so everything here is median-based and distribution-free.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

FASTER = "faster"
SLOWER = "slower"
NO_CHANGE = "no significant change"


def median(xs: Sequence[float]) -> float:
    if not xs:
        raise ValueError("median of an empty sample")
    s = sorted(xs)
    n = len(s)
    mid = n // 2
    return float(s[mid]) if n % 2 else (s[mid - 1] + s[mid]) / 2.0


def quantile(xs: Sequence[float], q: float) -> float:
    """Quantile with linear interpolation between order statistics (numpy's default)."""
    if not xs:
        raise ValueError("quantile of an empty sample")
    s = sorted(xs)
    pos = (len(s) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def iqr(xs: Sequence[float]) -> float:
    return quantile(xs, 0.75) - quantile(xs, 0.25)


def mad(xs: Sequence[float]) -> float:
    """Median absolute deviation (unscaled)."""
    m = median(xs)
    return median([abs(x - m) for x in xs])


def rel_spread(xs: Sequence[float]) -> float:
    """MAD as a fraction of the median (0 when the median is 0)."""
    m = median(xs)
    return mad(xs) / m if m else 0.0


@dataclass(frozen=True)
class RatioCI:
    ratio: float  # point estimate: median of paired ratios (or ratio of medians if unpaired)
    lo: float
    hi: float
    paired: bool
    n: int


def _safe_ratio(h: float, b: float) -> float:
    if b <= 0:
        return 1.0 if h <= 0 else math.inf
    return h / b


def bootstrap_ratio_ci(
    base: Sequence[float],
    head: Sequence[float],
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    paired: bool = True,
) -> RatioCI:
    """CI of head/base. Paired (same length, round i of base ran next to round i of head):
    percentile bootstrap of the median of the per-round ratios. Unpaired: bootstrap each side
    and take the ratio of medians. Seeded, so the same data give the same interval."""
    if not base or not head:
        raise ValueError("bootstrap needs samples on both sides")
    rng = random.Random(seed)
    alpha = (1.0 - confidence) / 2.0
    stats: list[float] = []
    if paired and len(base) == len(head):
        ratios = [_safe_ratio(h, b) for b, h in zip(base, head, strict=True)]
        n = len(ratios)
        point = median(ratios)
        for _ in range(n_boot):
            stats.append(median([ratios[rng.randrange(n)] for _ in range(n)]))
        is_paired = True
    else:
        nb, nh = len(base), len(head)
        point = _safe_ratio(median(head), median(base))
        for _ in range(n_boot):
            bs = median([base[rng.randrange(nb)] for _ in range(nb)])
            hs = median([head[rng.randrange(nh)] for _ in range(nh)])
            stats.append(_safe_ratio(hs, bs))
        is_paired = False
        n = min(nb, nh)
    return RatioCI(point, quantile(stats, alpha), quantile(stats, 1 - alpha), is_paired, n)


@lru_cache(maxsize=256)
def _u_distribution(n1: int, n2: int) -> tuple[int, ...]:
    """Counts of rank arrangements giving each U value (U = 0..n1*n2), no ties."""
    # f[i][j][u]: number of sequences of i x's and j y's with U_x = u.
    # Recurrence on the largest element: it is an x (adds j to U_x) or a y (adds 0).
    prev_row: list[list[int]] = [[1] for _ in range(n2 + 1)]  # i = 0: only U = 0
    for i in range(1, n1 + 1):
        row: list[list[int]] = []
        for j in range(n2 + 1):
            size = i * j + 1
            counts = [0] * size
            a = prev_row[j]  # largest is x: U += j
            for u, c in enumerate(a):
                counts[u + j] += c
            if j > 0:
                b = row[j - 1]  # largest is y
                for u, c in enumerate(b):
                    counts[u] += c
            row.append(counts)
        prev_row = row
    return tuple(prev_row[n2])


def _ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        r = (i + j) / 2.0 + 1.0
        for k in range(i, j + 1):
            ranks[order[k]] = r
        if j > i:
            ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


@dataclass(frozen=True)
class MannWhitney:
    u: float  # U statistic of the first sample (number of pairs with x > y, ties count 1/2)
    p: float  # two-sided p-value
    exact: bool


def mann_whitney_u(x: Sequence[float], y: Sequence[float], *,
                   method: str = "auto") -> MannWhitney:
    """Two-sided Mann-Whitney U test. `auto`: exact distribution when there are no ties and
    both samples are small (n1*n2 <= 400); otherwise (or `asymptotic`) the normal
    approximation with tie and continuity correction."""
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        raise ValueError("Mann-Whitney needs two non-empty samples")
    ranks, ties = _ranks(list(x) + list(y))
    r1 = sum(ranks[:n1])
    u1 = r1 - n1 * (n1 + 1) / 2.0
    if method not in ("auto", "exact", "asymptotic"):
        raise ValueError(f"unknown Mann-Whitney method {method!r}")
    if method == "exact" and ties:
        raise ValueError("exact Mann-Whitney needs samples without ties")
    if method == "exact" or (method == "auto" and not ties and n1 * n2 <= 400):
        dist = _u_distribution(n1, n2)
        total = sum(dist)
        u_small = min(u1, n1 * n2 - u1)
        cdf = sum(dist[: int(math.floor(u_small)) + 1]) / total
        return MannWhitney(u1, min(1.0, 2.0 * cdf), True)
    n = n1 + n2
    mu = n1 * n2 / 2.0
    tie_term = sum(t**3 - t for t in ties) / (n * (n - 1)) if n > 1 else 0.0
    sigma = math.sqrt(n1 * n2 / 12.0 * ((n + 1) - tie_term))
    if sigma == 0:
        return MannWhitney(u1, 1.0, False)
    z = (abs(u1 - mu) - 0.5) / sigma
    p = math.erfc(max(z, 0.0) / math.sqrt(2.0))
    return MannWhitney(u1, min(1.0, p), False)


def direction(ci: RatioCI, *, min_effect: float = 0.05) -> str:
    """The statistics alone: faster/slower when the CI excludes 1 and the ratio moved by more
    than `min_effect`, whatever the size of the change in seconds."""
    if ci.lo > 1.0 and ci.ratio - 1.0 > min_effect:
        return SLOWER
    if ci.hi < 1.0 and 1.0 - ci.ratio > min_effect:
        return FASTER
    return NO_CHANGE


def verdict(
    ci: RatioCI,
    *,
    min_effect: float = 0.05,
    base_median: float | None = None,
    head_median: float | None = None,
    min_abs: float = 0.0,
) -> str:
    """The decision `compare` and `gate` act on: the direction, but only when (medians given)
    the absolute change also exceeds `min_abs` seconds."""
    if base_median is not None and head_median is not None:
        if abs(head_median - base_median) < min_abs:
            return NO_CHANGE
    return direction(ci, min_effect=min_effect)


def wording(decision: str, moved: str, floor: str) -> str:
    """What a person reads: a change the statistics see but the absolute floor discounts is
    named, not hidden as "no significant change" (which a real +21 % at p = 0.008 is not)."""
    if decision == NO_CHANGE and moved != NO_CHANGE:
        return f"{moved} (under the {floor} floor)"
    return decision

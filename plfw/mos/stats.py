"""Statistics for MOS reports, in plain Python (scipy is not a dependency).

- Confidence intervals: mean +- t(0.975, n-1) * sd / sqrt(n). The Student t quantile is found by
  bisection on the t CDF, which is the regularised incomplete beta function evaluated by its
  continued fraction (accurate to ~1e-10, far beyond what a MOS table shows).
- Rater consistency: for each rater, Spearman's rank correlation between their scores and the mean
  score of all other raters on the same items (leave-one-out). Rank correlation suits the ordinal
  1-5 scale and ignores a rater's personal offset (a strict rater who ranks like everyone else is
  consistent); a value near 0 flags a rater who clicked at random.
- Method comparisons: Wilcoxon signed-rank test on paired ratings (same rater, same image, two
  methods), zero differences dropped, two-sided; the exact permutation distribution (with the
  observed tied ranks) for up to 60 pairs, the normal approximation with tie and continuity
  corrections above. p-values are Holm-corrected over all pairs tested.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

EXACT_MAX_N = 60


@dataclass(frozen=True)
class Summary:
    """Mean with its 95% t confidence interval (NaN bounds when fewer than 2 values)."""

    n: int
    mean: float
    sd: float
    low: float
    high: float


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz evaluation)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_ppf(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (e.g. t_ppf(0.975, 4) = 2.776)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def summarize(values: Sequence[float], level: float = 0.95) -> Summary:
    """Mean, sample SD and t confidence interval of ``values``."""
    n = len(values)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = sum(values) / n
    if n < 2:
        return Summary(n, mean, math.nan, math.nan, math.nan)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_ppf(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n)
    return Summary(n, mean, sd, mean - half, mean + half)


def rankdata(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties given their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; NaN when either side is constant or has fewer than 2 values."""
    n = len(x)
    if n < 2:
        return math.nan
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson on average ranks)."""
    return pearson(rankdata(x), rankdata(y))


def rater_consistency(scores: dict[str, dict[str, float]]) -> dict[str, tuple[float, int]]:
    """rater -> (Spearman rho against the mean of the other raters, items compared).

    ``scores`` maps rater -> item -> score. Only items that at least one other rater scored count;
    rho is NaN with fewer than 3 such items or when a side is constant.
    """
    out = {}
    for rater, mine in scores.items():
        xs, ys = [], []
        for item, score in mine.items():
            others = [s[item] for r, s in scores.items() if r != rater and item in s]
            if others:
                xs.append(score)
                ys.append(sum(others) / len(others))
        out[rater] = (spearman(xs, ys) if len(xs) >= 3 else math.nan, len(xs))
    return out


@dataclass(frozen=True)
class SignedRank:
    """Wilcoxon signed-rank result: ``n`` non-zero differences, W+ and the two-sided p-value."""

    n: int
    w_plus: float
    p: float
    exact: bool


def wilcoxon(diffs: Sequence[float]) -> SignedRank:
    """Two-sided Wilcoxon signed-rank test of paired differences against a zero median."""
    d = [x for x in diffs if x != 0]
    n = len(d)
    if n == 0:
        return SignedRank(0, 0.0, 1.0, True)
    ranks = rankdata([abs(x) for x in d])
    w_plus = sum(r for r, x in zip(ranks, d, strict=True) if x > 0)
    if n <= EXACT_MAX_N:
        # Each rank joins W+ with probability 1/2; doubled ranks are whole even with ties.
        doubled = [round(2 * r) for r in ranks]
        dist = [1.0] + [0.0] * sum(doubled)
        top = 0
        for r in doubled:
            for s in range(top, -1, -1):
                if dist[s]:
                    dist[s + r] += dist[s]
            top += r
        total = 2.0 ** n
        w2 = round(2 * w_plus)
        low = sum(dist[: w2 + 1]) / total
        high = sum(dist[w2:]) / total
        return SignedRank(n, w_plus, min(1.0, 2.0 * min(low, high)), True)
    mean = n * (n + 1) / 4.0
    ties: dict[float, int] = {}
    for r in ranks:
        ties[r] = ties.get(r, 0) + 1
    var = n * (n + 1) * (2 * n + 1) / 24.0 - sum(t**3 - t for t in ties.values()) / 48.0
    if var <= 0:
        return SignedRank(n, w_plus, 1.0, False)
    z = max(0.0, abs(w_plus - mean) - 0.5) / math.sqrt(var)
    return SignedRank(n, w_plus, min(1.0, math.erfc(z / math.sqrt(2.0))), False)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted

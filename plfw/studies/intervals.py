"""Intervals for ablation studies that hold with few seeds: a two-component t interval.

**What it computes.** A study scores every trained model (one per run x sweep value x seed) on
the same evaluation images, so one run at one setting gives a matrix ``x[seed, image]``. Its
score is the mean of that matrix, and every quantity a report needs -- a run's mean, a run minus
a baseline, a metric interpolated between two sweep points -- is a linear combination
``sum_k w_k * mean(x_k)`` of such matrices over the same images. :func:`combine` gives that
value a standard error from two variance components:

* a *seed component* per term, ``w_k^2 * var(per-seed means of x_k, ddof=1) / n_seeds_k``: how
  much the term would move if the training runs were repeated with new seeds (each term has its
  own seeds, so these add up);
* one *image component*, ``var over images of (sum_k w_k * per-image mean of x_k), ddof=1) /
  n_images``: how much the combination would move on another draw of evaluation images. The
  images are paired across terms, so what they share (an image that is hard for every model)
  cancels out of a difference instead of widening it.

The interval is ``value +- t * se`` with the t quantile at the Welch-Satterthwaite degrees of
freedom of those components (seed component k has ``n_seeds_k - 1``, the image component
``n_images - 1``). With 3 seeds and seed-to-seed spread that dominates, that is a t quantile at
about 2 degrees of freedom (4.30 instead of 1.96): that width is what 3 seeds honestly support.

One guard on top: the interval is never narrower than the seed components alone would give
(their own variance with their own Welch-Satterthwaite df), and ``p`` is the larger of the two
tests' p-values, so ``excludes_zero`` and ``p < 1 - confidence`` agree. Why: with 2-3 seeds the
estimated seed variance is itself very noisy; when it comes out small by chance, plain
Welch-Satterthwaite also raises the df towards the images' 19, so the interval shrinks twice.
Measured on the model below (20,000 simulations each), plain Welch-Satterthwaite covered only
92.2-93.7 % of run means with 3 seeds and 87.8-91.0 % with 2 seeds once the seed component
was larger than the image component; with the guard every case is at or above 94.6 %. The
guard changes nothing when the images dominate. ``df`` reports the effective degrees of
freedom, so ``high - value == t(df) * se`` always holds.

Each per-image mean also carries a share of the seed noise and each per-seed mean a share of the
image noise, so the estimate counts the seed-by-image noise twice; that errs on the wide side.
A term with a single seed has no seed-variance estimate at all: its result has an infinite
interval, NaN ``se`` and ``p`` and says why in ``Estimate.caveat`` -- never a falsely narrow
interval.

**Why not the percentile bootstrap** (plfw 0.1's ``plfw.bootstrap``, which this replaced).
Resampling 3 seeds with replacement can only produce means inside the range of the 3 seed
means, so the interval cannot reach past what was observed, and the resampled means have only
``(n - 1) / n`` of the seed variance (2/3 with 3 seeds, 1/2 with 2) while the percentile
interval uses normal-like quantiles instead of a t quantile with 2 degrees of freedom. When the
seed spread dominates, its intervals are far too narrow.

**The images are a sample.** The image component treats the evaluation images as drawn from
the images one could have evaluated on: the truth an interval covers is the population mean
over images and seeds, not the mean on these particular 5 or 14 pictures. That is the right
question for "is loss A better than loss B", and it makes intervals on tiny test sets (Set5)
honestly wide.

**Measured coverage** (``tests/test_stats.py``; hierarchical model ``x[s, i] = mu + image_i +
run_image_i + seed_s + noise_si``, 20 images drawn fresh per simulation, 2,000 simulations per
case, nominal 95 %)::

    case (sd: image, run x image, seed, noise)    this module     percentile bootstrap
                                                  mean    diff    mean    diff
    3 seeds, seed-dominated  (0.3, 0.1, 1, 0.2)    95.0 %  97.0 %  75.8 %  80.5 %
    3 seeds, image-dominated (1, 0.3, 0.05, 0.1)   95.2 %  95.9 %
    3 seeds, balanced        (1, 0.3, 0.25, 0.2)   96.2 %  96.2 %
    2 seeds, seed-dominated                        95.3 %  98.2 %
    2 seeds, image-dominated                       96.2 %  97.8 %

(the bootstrap with 200 resamples over 1,000 simulations; with 10,000 resamples over 300
simulations it covered 71.7 % / 79.3 %: the cause is the seed level, not the resample count).

**Matched distortion** (Blau & Michaeli, CVPR 2018): a method that gives up distortion (PSNR)
can always look more natural, so SR methods are compared at equal distortion. A run's *curve*
is one point per sweep value, each a pair of matrices ``(psnr, metric)`` over the same seeds and
images. :func:`common_levels` picks PSNR levels inside the range every curve covers,
:func:`at_level` gives the terms of the linear interpolation of the metric at a level (weights
from the points' mean PSNRs, treated as fixed, so the uncertainty of where the curve crosses the
level is not in the interval), and :func:`dominance` says whether one run is better at every
level.

Pure functions of numpy arrays; results are frozen dataclasses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

Term = tuple[float, np.ndarray]
Point = tuple[np.ndarray, np.ndarray]
Curve = Sequence[Point]

METHOD = ("t interval from two variance components: per run, the variance of its per-seed means "
          "/ seeds; shared, the variance over images of the combination's per-image means / "
          "images (images paired across runs); Welch-Satterthwaite degrees of freedom")

BETTER = "better over the whole common range"
WORSE = "worse over the whole common range"
NOT_SEPARATED = "not separated at every level"
NO_RANGE = "no common PSNR range"

ONE_SEED = "a term has one seed, so its seed-to-seed variance is unknown: no interval"
ONE_IMAGE = "one evaluation image, so the image-to-image variance is unknown: no interval"


@dataclass(frozen=True)
class Estimate:
    """A value with its interval, standard error, degrees of freedom and two-sided p-value
    against 0 (the p-value means something for differences, not for raw scores).

    ``caveat`` is empty when the interval is valid; otherwise it says why there is none (then
    ``low``/``high`` are infinite and ``se``/``p`` are NaN).
    """

    value: float
    low: float
    high: float
    se: float
    df: float
    p: float
    caveat: str = ""

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely on one side of 0."""
        return self.low > 0 or self.high < 0

    @property
    def valid(self) -> bool:
        """Whether the interval could be estimated at all."""
        return not self.caveat


def _matrix(values: np.ndarray | Sequence[Sequence[float]], what: str = "scores") -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{what}: expected a (seeds, images) matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: scores must be finite")
    return x


def _t_quantile(df: float, q: float) -> float:
    if math.isinf(df):
        return float(special.ndtri(q))
    return float(special.stdtrit(df, q))


def combine(terms: Sequence[Term], confidence: float = 0.95) -> Estimate:
    """``sum_k w_k * mean(x_k)`` with a t interval whose variance has a seed component per term
    and one image component over the shared (paired) image columns (see the module notes).

    Each ``x_k`` is a (seeds, images) matrix; all have the same image columns in the same
    order, the seed counts may differ. Terms with weight 0 are ignored.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    used = [(float(w), _matrix(x, f"term {k}")) for k, (w, x) in enumerate(terms) if w != 0]
    if not used:
        raise ValueError("combine needs at least one term with a non-zero weight")
    widths = {x.shape[1] for _, x in used}
    if len(widths) != 1:
        raise ValueError(f"every term must be scored on the same images, got counts "
                         f"{sorted(widths)}")
    n_images = widths.pop()
    value = float(sum(w * x.mean() for w, x in used))

    caveat = ""
    if any(x.shape[0] < 2 for _, x in used):
        caveat = ONE_SEED
    elif n_images < 2:
        caveat = ONE_IMAGE
    if caveat:
        nan = float("nan")
        return Estimate(value, -math.inf, math.inf, nan, nan, nan, caveat)

    # (variance, degrees of freedom) of each component
    seed_parts = [(w * w * x.mean(axis=1).var(ddof=1) / x.shape[0], x.shape[0] - 1)
                  for w, x in used]
    per_image = sum(w * x.mean(axis=0) for w, x in used)
    image_part = (float(np.var(per_image, ddof=1)) / n_images, n_images - 1)
    var, df = _satterthwaite([*seed_parts, image_part])
    if var <= 0:
        # Every seed and every image agree exactly: no spread to estimate from.
        p = 1.0 if value == 0 else 0.0
        return Estimate(value, value, value, 0.0, math.inf, p)
    se = math.sqrt(var)
    q = 0.5 + confidence / 2
    half = _t_quantile(df, q) * se
    p = 2 * special.stdtr(df, -abs(value) / se)
    seed_var, seed_df = _satterthwaite(seed_parts)
    if seed_var > 0:
        # Guard: never narrower than the seed components alone support (see the module notes).
        seed_half = _t_quantile(seed_df, q) * math.sqrt(seed_var)
        p = max(p, 2 * special.stdtr(seed_df, -abs(value) / math.sqrt(seed_var)))
        if seed_half > half:
            half = seed_half
            df = float(special.stdtridf(q, half / se))
    return Estimate(value, value - half, value + half, se, float(df), min(float(p), 1.0))


def _satterthwaite(parts: Sequence[tuple[float, int]]) -> tuple[float, float]:
    """Total variance and its Welch-Satterthwaite degrees of freedom."""
    var = float(sum(v for v, _ in parts))
    denom = sum(v * v / d for v, d in parts if v > 0)
    return var, (var * var / denom if denom > 0 else math.inf)


def run_mean(x: np.ndarray, confidence: float = 0.95) -> Estimate:
    """A run's mean score over seeds and images, with its interval."""
    return combine([(1.0, x)], confidence)


def difference(x: np.ndarray, baseline: np.ndarray, confidence: float = 0.95) -> Estimate:
    """``mean(x) - mean(baseline)`` over the same images (paired), independent seeds."""
    return combine([(1.0, x), (-1.0, baseline)], confidence)


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values, in the input's order: compare each to the
    family-wise level directly. Monotone in the raw p-values and capped at 1. A NaN p-value
    (no interval) counts in the family size and stays NaN."""
    names = list(pvalues)
    m = len(names)
    order = sorted(names, key=lambda n: (math.isnan(pvalues[n]), pvalues[n]))
    adjusted: dict[str, float] = {}
    running = 0.0
    for rank, name in enumerate(order):
        p = float(pvalues[name])
        if math.isnan(p):
            adjusted[name] = float("nan")
            continue
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[name] = running
    return {name: adjusted[name] for name in names}


def kendall_tau(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Kendall's tau-b between two scorings of the same runs (e.g. at two training points or
    by two judges): 1 = same order, -1 = reversed; ties count as in tau-b. NaN when either
    scoring has all values tied."""
    if set(a) != set(b):
        raise ValueError(f"kendall_tau needs the same runs on both sides; only in one: "
                         f"{sorted(set(a) ^ set(b))}")
    if len(a) < 2:
        raise ValueError("kendall_tau needs at least two runs")
    names = list(a)
    x = [float(a[n]) for n in names]
    y = [float(b[n]) for n in names]
    if len(set(x)) < 2 or len(set(y)) < 2:
        return float("nan")
    return float(stats.kendalltau(x, y, variant="b").statistic)


# -- matched distortion -------------------------------------------------------------------------

def _points(curve: Curve) -> list[tuple[float, np.ndarray]]:
    """(mean PSNR, metric matrix) per point, sorted by mean PSNR."""
    if not curve:
        raise ValueError("a curve needs at least one point")
    out = []
    for k, (psnr, metric) in enumerate(curve):
        p = _matrix(psnr, f"point {k} PSNR")
        m = _matrix(metric, f"point {k} metric")
        if p.shape != m.shape:
            raise ValueError(f"point {k}: PSNR {p.shape} and metric {m.shape} must be scored on "
                             f"the same seeds and images")
        out.append((float(p.mean()), m))
    out.sort(key=lambda pm: pm[0])
    return out


def psnr_range(curve: Curve) -> tuple[float, float]:
    """Lowest and highest mean PSNR over a curve's points."""
    pts = _points(curve)
    return pts[0][0], pts[-1][0]


def common_levels(curves: Mapping[str, Curve], count: int = 5) -> list[float]:
    """``count`` PSNR levels evenly spaced over the range every curve covers (ends included;
    one level: the middle). Empty when the ranges do not overlap."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if not curves:
        return []
    ranges = [psnr_range(c) for c in curves.values()]
    low = max(r[0] for r in ranges)
    high = min(r[1] for r in ranges)
    if low > high:
        return []
    if count == 1 or low == high:
        return [(low + high) / 2] if count == 1 else [low]
    return [float(v) for v in np.linspace(low, high, count)]


def at_level(curve: Curve, level: float) -> list[Term]:
    """Terms of the curve's metric linearly interpolated at PSNR ``level`` between the two
    points whose mean PSNRs bracket it; ``combine`` of them is the interpolated metric with its
    interval. The weights are treated as fixed (PSNR's own uncertainty is not propagated)."""
    pts = _points(curve)
    lo_psnr, hi_psnr = pts[0][0], pts[-1][0]
    if not lo_psnr <= level <= hi_psnr:
        raise ValueError(f"PSNR level {level:.3f} dB is outside this curve's range "
                         f"{lo_psnr:.3f}-{hi_psnr:.3f} dB (its points' mean PSNRs): a run can "
                         f"only be compared where its curve was measured")
    for (p0, m0), (p1, m1) in zip(pts, pts[1:], strict=False):
        if p0 <= level <= p1:
            if level == p0 or p1 == p0:
                return [(1.0, m0)]
            if level == p1:
                return [(1.0, m1)]
            t = (level - p0) / (p1 - p0)
            return [(1.0 - t, m0), (t, m1)]
    return [(1.0, pts[-1][1])]  # a single-point curve at exactly this level


def matched_difference(curve: Curve, baseline: Curve, level: float,
                       confidence: float = 0.95) -> Estimate:
    """The metric of ``curve`` minus that of ``baseline``, both interpolated at PSNR
    ``level``: the matched-distortion comparison (images paired, seeds independent)."""
    terms = at_level(curve, level) + [(-w, m) for w, m in at_level(baseline, level)]
    return combine(terms, confidence)


def dominance(differences: Sequence[Estimate], higher_is_better: bool) -> str:
    """Verdict over the matched-distortion differences (run - baseline) at the common levels:
    :data:`BETTER` / :data:`WORSE` when every level's interval excludes zero on the same side,
    otherwise :data:`NOT_SEPARATED` (:data:`NO_RANGE` when there are no levels)."""
    if not differences:
        return NO_RANGE
    if all(d.low > 0 for d in differences):
        return BETTER if higher_is_better else WORSE
    if all(d.high < 0 for d in differences):
        return WORSE if higher_is_better else BETTER
    return NOT_SEPARATED

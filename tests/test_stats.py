"""plfw.studies.intervals: interval coverage by simulation (and the old bootstrap's
under-coverage), hand computations of combine/holm/kendall_tau/at_level, and its refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from plfw.studies import intervals as stats

IMAGES = 20
SIMS = 2000
BOOT_SIMS = 1000
# (image sd, run-by-image sd, seed sd, noise sd): seed spread large / small against the images
SEED_DOMINATED = (0.3, 0.1, 1.0, 0.2)
IMAGE_DOMINATED = (1.0, 0.3, 0.05, 0.1)
BALANCED = (1.0, 0.3, 0.25, 0.2)
MU_A, MU_B = 1.0, 0.4


def _simulate(rng: np.random.Generator, sims: int, seeds: int, sd: tuple[float, ...]
              ) -> tuple[np.ndarray, np.ndarray]:
    """``sims`` studies of two runs A and B on the same freshly drawn images, independent
    seeds: x[s, i] = mu_run + image_i + run_image_i + seed_s + noise_si."""
    sd_image, sd_run_image, sd_seed, sd_noise = sd
    image = rng.normal(0, sd_image, (sims, 1, IMAGES))

    def run(mu: float) -> np.ndarray:
        return (mu + image + rng.normal(0, sd_run_image, (sims, 1, IMAGES))
                + rng.normal(0, sd_seed, (sims, seeds, 1))
                + rng.normal(0, sd_noise, (sims, seeds, IMAGES)))

    return run(MU_A), run(MU_B)


def _covers(e: stats.Estimate | tuple[float, float], truth: float) -> bool:
    if isinstance(e, tuple):
        return bool(e[0] <= truth <= e[1])
    return bool(e.low <= truth <= e.high)


@pytest.mark.parametrize(("seeds", "sd", "label"), [
    (3, SEED_DOMINATED, "3 seeds, seed-dominated"),
    (3, IMAGE_DOMINATED, "3 seeds, image-dominated"),
    (3, BALANCED, "3 seeds, balanced"),
    (2, SEED_DOMINATED, "2 seeds, seed-dominated"),
    (2, IMAGE_DOMINATED, "2 seeds, image-dominated"),
])
def test_intervals_cover_the_population_value(seeds: int, sd: tuple[float, ...],
                                              label: str) -> None:
    rng = np.random.default_rng(20240 + seeds)
    a, b = _simulate(rng, SIMS, seeds, sd)
    mean_hits = sum(_covers(stats.run_mean(a[k]), MU_A) for k in range(SIMS))
    diff_hits = sum(_covers(stats.difference(a[k], b[k]), MU_A - MU_B) for k in range(SIMS))
    mean_cov, diff_cov = mean_hits / SIMS, diff_hits / SIMS
    msg = (f"{label}: run_mean covers {mean_cov:.1%}, difference covers {diff_cov:.1%} "
           f"of {SIMS} simulations (nominal 95 %)")
    print(msg)
    assert mean_cov >= 0.93 and diff_cov >= 0.93, msg


def _percentile_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int, seed: int
                          ) -> tuple[tuple[float, float], tuple[float, float]]:
    """The v1 study's method (plfw 0.1's ``plfw.bootstrap``), kept here to show why it was
    replaced: images resampled once for both runs, each run's seeds resampled independently,
    the 2.5 / 97.5 percentiles of the resampled means and of their difference."""
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    images = rng.integers(0, n, size=(resamples, n))

    def means(x: np.ndarray) -> np.ndarray:
        seeds = rng.integers(0, x.shape[0], size=(resamples, x.shape[0]))
        return x[seeds[:, :, None], images[:, None, :]].mean(axis=(1, 2))

    ma, mb = means(a), means(b)
    low_a, high_a = np.percentile(ma, [2.5, 97.5])
    low_d, high_d = np.percentile(ma - mb, [2.5, 97.5])
    return (float(low_a), float(high_a)), (float(low_d), float(high_d))


def test_old_percentile_bootstrap_under_covers_when_seeds_dominate() -> None:
    """Why plfw.studies.intervals exists: resampling 3 seeds cannot reach past their range."""
    rng = np.random.default_rng(7)
    a, b = _simulate(rng, BOOT_SIMS, 3, SEED_DOMINATED)
    mean_hits = diff_hits = 0
    for k in range(BOOT_SIMS):
        mean_ci, diff_ci = _percentile_bootstrap(a[k], b[k], 200, k)
        mean_hits += _covers(mean_ci, MU_A)
        diff_hits += _covers(diff_ci, MU_A - MU_B)
    mean_cov, diff_cov = mean_hits / BOOT_SIMS, diff_hits / BOOT_SIMS
    msg = (f"percentile bootstrap, 3 seeds, seed-dominated: mean covers {mean_cov:.1%}, "
           f"difference covers {diff_cov:.1%} of {BOOT_SIMS} simulations (nominal 95 %)")
    print(msg)
    assert mean_cov < 0.88 and diff_cov < 0.88, msg


def _t(df: float) -> float:
    return float(sps.t.ppf(0.975, df))


def test_combine_matches_a_hand_computation_where_welch_satterthwaite_governs() -> None:
    x = np.array([[0.0, 3, 6], [1, 4, 7], [2, 5, 8]])
    # per-seed means 3, 4, 5: var 1, / 3 seeds = 1/3 (df 2)
    # per-image means 1, 4, 7: var 9, / 3 images = 3 (df 2)
    var = 1 / 3 + 3
    df = var**2 / ((1 / 3) ** 2 / 2 + 3**2 / 2)
    e = stats.run_mean(x)
    assert e.value == pytest.approx(4.0)
    assert e.se == pytest.approx(math.sqrt(var))
    assert e.df == pytest.approx(df)
    assert e.high - e.value == pytest.approx(_t(df) * math.sqrt(var))
    assert e.p == pytest.approx(2 * sps.t.sf(4.0 / math.sqrt(var), df))
    assert e.valid and e.excludes_zero == (e.low > 0)


def test_combine_matches_a_hand_computation_of_a_difference() -> None:
    x = np.array([[0.0, 3, 6], [1, 4, 7], [2, 5, 8]])  # 3 seeds, mean 4
    base = np.array([[0.0, 1, 2], [2, 3, 4]])  # 2 seeds, mean 2
    seed_x, seed_b = 1 / 3, 2 / 2  # var of per-seed means [3,4,5] / 3 and [1,3] / 2
    image = 4 / 3  # per-image differences [1,4,7] - [1,2,3] = [0,2,4]: var 4, / 3 images
    var = seed_x + seed_b + image
    df = var**2 / (seed_x**2 / 2 + seed_b**2 / 1 + image**2 / 2)
    seed_var = seed_x + seed_b
    seed_df = seed_var**2 / (seed_x**2 / 2 + seed_b**2 / 1)
    half = max(_t(df) * math.sqrt(var), _t(seed_df) * math.sqrt(seed_var))
    e = stats.difference(x, base)
    assert e.value == pytest.approx(2.0)
    assert e.se == pytest.approx(math.sqrt(var))
    assert (e.low, e.high) == pytest.approx((2 - half, 2 + half))
    # the guard governs here: the interval is that of the seed components alone
    assert half == pytest.approx(_t(seed_df) * math.sqrt(seed_var))
    assert e.high - e.value == pytest.approx(_t(e.df) * e.se)  # df is the effective one
    assert stats.combine([(1, x), (-1, base)]) == e
    assert stats.combine([(2, x), (0, base)]).value == pytest.approx(8.0)


def test_paired_images_cancel_out_of_a_difference() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(0, 10, (1, 30))  # large, shared by both runs
    a = 1 + image + rng.normal(0, 0.1, (3, 30))
    b = image + rng.normal(0, 0.1, (3, 30))
    d = stats.difference(a, b)
    assert d.excludes_zero and d.p < 0.01
    assert d.se < 0.2 < stats.run_mean(a).se


def test_one_seed_gives_no_interval_instead_of_a_narrow_one() -> None:
    one = np.array([[1.0, 2.0, 3.0]])
    three = np.array([[1.0, 2, 3], [2, 3, 4], [3, 4, 5]])
    for e in (stats.run_mean(one), stats.difference(three, one)):
        assert not e.valid and "one seed" in e.caveat
        assert e.low == -math.inf and e.high == math.inf and not e.excludes_zero
        assert math.isnan(e.se) and math.isnan(e.p)
    assert stats.run_mean(one).value == pytest.approx(2.0)


def test_combine_refuses_mismatched_images_and_bad_input() -> None:
    with pytest.raises(ValueError, match="same images"):
        stats.difference(np.ones((3, 4)), np.ones((3, 5)))
    with pytest.raises(ValueError, match="finite"):
        stats.run_mean(np.array([[1.0, float("nan")], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="non-zero weight"):
        stats.combine([])


def test_holm_by_hand() -> None:
    p = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005}
    # sorted: d 0.005*4 = 0.02, a 0.01*3 = 0.03, c 0.03*2 = 0.06, b max(0.04*1, 0.06) = 0.06
    assert stats.holm(p) == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02})
    assert list(stats.holm(p)) == ["a", "b", "c", "d"]
    assert stats.holm({"x": 0.5, "y": 0.6}) == {"x": 1.0, "y": 1.0}
    assert stats.holm({}) == {}
    with_nan = stats.holm({"x": 0.01, "y": float("nan")})
    assert with_nan["x"] == pytest.approx(0.02) and math.isnan(with_nan["y"])


def test_kendall_tau_on_known_orders() -> None:
    a = {"w": 1.0, "x": 2.0, "y": 3.0, "z": 4.0}
    assert stats.kendall_tau(a, a) == pytest.approx(1.0)
    assert stats.kendall_tau(a, {k: -v for k, v in a.items()}) == pytest.approx(-1.0)
    swapped = {"w": 1.0, "x": 3.0, "y": 2.0, "z": 4.0}  # 5 concordant, 1 discordant of 6 pairs
    assert stats.kendall_tau(a, swapped) == pytest.approx(4 / 6)
    # tau-b with a tie: 2 concordant, 0 discordant, one pair tied in b only
    tied = stats.kendall_tau({"p": 1.0, "q": 2.0, "r": 3.0}, {"p": 1.0, "q": 1.0, "r": 2.0})
    assert tied == pytest.approx(2 / math.sqrt(3 * 2))
    with pytest.raises(ValueError, match="same runs"):
        stats.kendall_tau(a, {"w": 1.0, "x": 2.0})


def _point(psnr: float, metric: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.array([[-0.1, 0.1], [0.1, -0.1], [0.0, 0.0]])  # mean 0
    return psnr + offsets, metric


M0, M1, M2 = (np.full((3, 2), v) + np.array([[0.0], [0.1], [0.2]]) for v in (0.3, 0.2, 0.1))


def test_at_level_interpolates_between_bracketing_points() -> None:
    curve = [_point(28.0, M1), _point(30.0, M2), _point(26.0, M0)]  # not in PSNR order
    terms = stats.at_level(curve, 29.0)
    assert [w for w, _ in terms] == pytest.approx([0.5, 0.5])
    assert terms[0][1] is M1 and terms[1][1] is M2
    terms = stats.at_level(curve, 26.5)  # a quarter of the way from 26 to 28
    assert [w for w, _ in terms] == pytest.approx([0.75, 0.25])
    assert terms[0][1] is M0 and terms[1][1] is M1
    assert stats.combine(terms).value == pytest.approx(0.75 * M0.mean() + 0.25 * M1.mean())
    assert stats.at_level(curve, 30.0) == [(1.0, M2)]
    assert stats.at_level(curve, 28.0) == [(1.0, M1)]
    for level in (25.9, 30.5):
        with pytest.raises(ValueError, match=r"outside this curve's range 26\.000-30\.000 dB"):
            stats.at_level(curve, level)


def test_common_levels_and_matched_difference() -> None:
    a = [_point(26.0, M0), _point(28.0, M1), _point(30.0, M2)]
    b = [_point(27.0, M0 + 1), _point(32.0, M2 + 1)]
    assert stats.common_levels({"a": a, "b": b}, count=4) == pytest.approx([27, 28, 29, 30])
    assert stats.common_levels({"a": a, "b": b}, count=1) == pytest.approx([28.5])
    assert stats.common_levels({"a": a, "c": [_point(31.0, M0), _point(33.0, M1)]}) == []
    levels = stats.common_levels({"a": a, "b": b})
    diffs = [stats.matched_difference(a, b, level) for level in levels]
    manual = stats.combine(stats.at_level(a, 29.0)
                           + [(-w, m) for w, m in stats.at_level(b, 29.0)])
    assert stats.matched_difference(a, b, 29.0) == manual
    assert all(d.value < -0.5 for d in diffs)
    assert stats.dominance(diffs, higher_is_better=False) == stats.BETTER
    assert stats.dominance(diffs, higher_is_better=True) == stats.WORSE
    with pytest.raises(ValueError, match="outside"):
        stats.matched_difference(a, b, 26.5)


def _est(low: float, high: float) -> stats.Estimate:
    return stats.Estimate((low + high) / 2, low, high, 1.0, 5.0, 0.01)


def test_dominance_wording() -> None:
    above, below, across = _est(0.1, 0.5), _est(-0.5, -0.1), _est(-0.1, 0.3)
    assert stats.dominance([above, above], higher_is_better=True) == stats.BETTER
    assert stats.dominance([below, below], higher_is_better=True) == stats.WORSE
    assert stats.dominance([below, below], higher_is_better=False) == stats.BETTER
    assert stats.dominance([above, across], higher_is_better=True) == stats.NOT_SEPARATED
    assert stats.dominance([above, below], higher_is_better=True) == stats.NOT_SEPARATED
    assert stats.dominance([], higher_is_better=True) == stats.NO_RANGE

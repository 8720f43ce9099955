"""Intervals for ablation studies: a two-level bootstrap over images and seeds.

A run's score is the mean of ``x[seed, image]`` over its seeds and the evaluation images. Both
levels are samples: the images from the images one could have evaluated on, the seeds from the
training runs one could have made. One bootstrap resample draws the images with replacement
(the *same* draw for every run, since every run is scored on the same images: a paired design)
and, independently for every run, that run's seeds with replacement, then takes the mean. The
interval is the percentile interval of ``resamples`` such means; a difference to a baseline is
resampled the same way, so its interval accounts for the images being shared and for each run's
seed-to-seed variation. Resamples come from ``numpy.random.default_rng(rng_seed)``, so a report
is reproducible to the digit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

METHOD = ("two-level percentile bootstrap: images resampled with replacement (one draw shared "
          "by all runs), then each run's seeds resampled with replacement, independently per "
          "run; statistic = mean over the resampled seeds x images")


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval."""

    value: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class SeedSpread:
    """How much a run's mean moves between seeds (one mean per seed over all images)."""

    means: tuple[float, ...]

    @property
    def range(self) -> float:
        return max(self.means) - min(self.means) if self.means else float("nan")

    @property
    def sd(self) -> float:
        return float(np.std(self.means, ddof=1)) if len(self.means) > 1 else float("nan")


def _matrix(values: np.ndarray | list[list[float]]) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"expected a (seeds, images) matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("scores must be finite")
    return x


def _resampled_means(x: np.ndarray, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Means of ``x`` (seeds x images) over one seed draw per row of ``images`` (B x n)."""
    b = images.shape[0]
    seeds = rng.integers(0, x.shape[0], size=(b, x.shape[0]))
    return x[seeds[:, :, None], images[:, None, :]].mean(axis=(1, 2))


def compare(runs: Mapping[str, np.ndarray | list[list[float]]], baseline: str | None = None,
            resamples: int = 10000, confidence: float = 0.95, rng_seed: int = 0
            ) -> tuple[dict[str, Interval], dict[str, Interval]]:
    """Mean with interval per run and, with ``baseline``, each other run's difference
    (run - baseline) with interval. Every matrix is (seeds, images) over the same images."""
    mats = {name: _matrix(v) for name, v in runs.items()}
    widths = {m.shape[1] for m in mats.values()}
    if len(widths) != 1:
        raise ValueError(f"every run must be scored on the same images, got counts {widths}")
    if baseline is not None and baseline not in mats:
        raise ValueError(f"baseline '{baseline}' has no scores")
    n = widths.pop()
    rng = np.random.default_rng(rng_seed)
    images = rng.integers(0, n, size=(resamples, n))
    boot = {name: _resampled_means(x, images, rng) for name, x in mats.items()}
    tail = (1 - confidence) / 2 * 100

    def interval(point: float, samples: np.ndarray) -> Interval:
        low, high = np.percentile(samples, [tail, 100 - tail])
        return Interval(float(point), float(low), float(high))

    means = {name: interval(x.mean(), boot[name]) for name, x in mats.items()}
    diffs: dict[str, Interval] = {}
    if baseline is not None:
        base = mats[baseline].mean()
        for name, x in mats.items():
            if name != baseline:
                diffs[name] = interval(x.mean() - base, boot[name] - boot[baseline])
    return means, diffs


def seed_spread(values: np.ndarray | list[list[float]]) -> SeedSpread:
    """Per-seed means of a (seeds, images) matrix."""
    return SeedSpread(tuple(float(v) for v in _matrix(values).mean(axis=1)))

"""The numbers of an ablation report: per-arm scores, comparisons with intervals, matched
distortion, the primary endpoint and whether learning curves have settled.

Every interval comes from :mod:`plfw.studies.intervals` (t intervals with seeds as the unit and
images as a paired second level). Comparisons with the baseline are Holm-corrected within their
family (one metric at one sweep point, or one metric at one matched PSNR level); the primary
endpoint is its own family. Images that appear twice across the evaluation sets (same picture,
small offset or crop) are counted once when sets are pooled."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from plfw.studies import intervals as stats
from plfw.studies.ablation import Ablation, Point, point_label
from plfw.studies.scores import BICUBIC, MetricInfo, Scores
from plfw.training.rundir import CURVE, read_log

PSNR = "psnr_y"


@dataclass
class Pool:
    """Which images of which sets one analysis uses: ``keep[set][i]`` is False for an image
    that duplicates an earlier one."""

    sets: list[str]
    keep: dict[str, list[bool]]

    @property
    def images(self) -> int:
        return sum(sum(self.keep[s]) for s in self.sets)


def duplicates(pairs: dict[str, list[Any]]) -> tuple[dict[str, list[bool]], list[str]]:
    """Mask of images to keep per set (later copies of the same picture dropped) and a line
    naming each duplicate."""
    from plfw.studies.duplicates import find_duplicates

    labels = {f"{s}/{p.name}": (s, i) for s, ps in pairs.items() for i, p in enumerate(ps)}
    found = find_duplicates({lab: pairs[s][i].hr for lab, (s, i) in labels.items()})
    keep = {s: [True] * len(ps) for s, ps in pairs.items()}
    notes = []
    for d in found:
        s, i = labels[d.second]
        if keep[s][i]:
            keep[s][i] = False
            notes.append(f"{d.second} shows the same picture as {d.first} (offset {d.offset}, "
                         f"mean difference {d.difference * 255:.2f}/255): counted once")
    return keep, notes


def _arm_labels(ab: Ablation, run: str, point: Point) -> list[str]:
    if run == BICUBIC or run in ab.references:
        return [run]
    return [j.label for j in ab.jobs if j.run == run and j.point == point]


def matrix(ab: Ablation, scores: Scores, run: str, point: Point, metric: str,
           pool: Pool) -> np.ndarray | None:
    """(seeds, images) scores of ``run`` at ``point`` for ``metric`` over the pool's images.
    A deterministic method (bicubic, a reference model) gets its one row twice: no seed
    variance, so its interval covers the image sample only."""
    rows = []
    for label in _arm_labels(ab, run, point):
        per_set = scores.values.get(label)
        if per_set is None or any(metric not in per_set.get(s, {}) for s in pool.sets):
            continue
        rows.append([v for s in pool.sets
                     for v, k in zip(per_set[s][metric], pool.keep[s], strict=True) if k])
    if not rows:
        return None
    x = np.asarray(rows, dtype=np.float64)
    return np.vstack([x, x]) if run == BICUBIC or run in ab.references else x


def estimate(e: stats.Estimate, **extra: Any) -> dict[str, Any]:
    """An Estimate as JSON-able values (None for infinite or NaN)."""
    def num(v: float) -> float | None:
        return float(v) if math.isfinite(v) else None

    return {"value": num(e.value), "low": num(e.low), "high": num(e.high), "se": num(e.se),
            "df": num(e.df), "p": num(e.p), "caveat": e.caveat, **extra}


def seed_interval(x: np.ndarray, confidence: float) -> dict[str, float | None]:
    """Mean and t interval of the per-seed means alone (what a plot's error bar shows: how far
    seeds spread; the image sample, shared by every run, is left out)."""
    from scipy import stats as sps

    means = x.mean(axis=1)
    mean = float(means.mean())
    if len(means) < 2 or np.allclose(means, means[0]):
        return {"value": mean, "low": None if len(means) < 2 else mean,
                "high": None if len(means) < 2 else mean}
    half = float(sps.t.ppf(0.5 + confidence / 2, len(means) - 1)
                 * means.std(ddof=1) / np.sqrt(len(means)))
    return {"value": mean, "low": mean - half, "high": mean + half}


def excludes_zero(d: dict[str, Any], alpha: float) -> bool:
    """Whether a comparison holds after correction (its Holm-adjusted p below alpha; without
    one, whether its interval excludes zero)."""
    if "p_holm" in d:
        return d["p_holm"] is not None and d["p_holm"] < alpha
    return d.get("low") is not None and (d["low"] > 0 or d["high"] < 0)


def verdict(d: dict[str, Any], higher_is_better: bool, alpha: float) -> str:
    if d.get("value") is None or not excludes_zero(d, alpha):
        return "same"
    return "better" if (d["value"] > 0) == higher_is_better else "worse"


def holm_into(diffs: dict[str, dict[str, Any]]) -> None:
    """Add each difference's Holm-adjusted p (``p_holm``), the dict being one family."""
    ps = {k: d["p"] if d["p"] is not None else math.nan for k, d in diffs.items()}
    for k, p in stats.holm(ps).items():
        diffs[k]["p_holm"] = None if math.isnan(p) else p


def setting(ab: Ablation, metrics: list[MetricInfo], scores: Scores, pool: Pool,
            point: Point) -> dict[str, Any]:
    """Comparison at one sweep point: each run's mean and its difference to the baseline,
    per metric (Holm over the runs)."""
    conf = ab.spec.report.confidence
    out: dict[str, Any] = {}
    runs = [BICUBIC, *ab.references, *ab.runs]
    for m in metrics:
        mats = {r: x for r in runs if (x := matrix(ab, scores, r, point, m.label, pool))
                is not None}
        base = ab.spec.baseline if ab.spec.baseline in mats else None
        diffs = {}
        if base is not None:
            diffs = {r: estimate(stats.difference(x, mats[base], conf)) for r, x in mats.items()
                     if r not in (base, BICUBIC)}
            holm_into(diffs)
        out[m.label] = {
            "higher_is_better": m.higher_is_better,
            "seeds": {r: (1 if r == BICUBIC or r in ab.references else len(x))
                      for r, x in mats.items()},
            "mean": {r: estimate(stats.run_mean(x, conf)) for r, x in mats.items()},
            "difference": diffs,
            "seed_means": {r: [float(v) for v in x.mean(axis=1)] for r, x in mats.items()},
        }
    return out


def labelled_curves(ab: Ablation, scores: Scores, metric: str, pool: Pool
                    ) -> dict[str, list[tuple[Point, np.ndarray, np.ndarray]]]:
    """Per run, its points in the perception-distortion plane: the sweep point and its (PSNR,
    metric) matrices over the same jobs."""
    out = {}
    for run in ab.runs:
        pts = []
        for p in ab.points:
            x, y = (matrix(ab, scores, run, p, k, pool) for k in (PSNR, metric))
            if x is not None and y is not None and x.shape == y.shape:
                pts.append((p, x, y))
        if pts:
            out[run] = pts
    return out


def curves(ab: Ablation, scores: Scores, metric: str, pool: Pool
           ) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """:func:`labelled_curves` as :mod:`plfw.studies.intervals` takes them: (PSNR, metric)
    per point."""
    return {run: [(x, y) for _, x, y in pts]
            for run, pts in labelled_curves(ab, scores, metric, pool).items()}


def matched(ab: Ablation, metrics: list[MetricInfo], scores: Scores, pool: Pool,
            levels: int = 5) -> dict[str, Any]:
    """Perception-distortion curves and the matched-distortion comparison per metric: each
    run's metric interpolated at common PSNR-Y levels, minus the baseline's (Holm over runs at
    each level), and whether one curve lies below the other over the whole common range."""
    conf = ab.spec.report.confidence
    out: dict[str, Any] = {}
    if not any(m.label == PSNR for m in metrics):
        return out
    for m in metrics:
        if m.label == PSNR:
            continue
        labelled = labelled_curves(ab, scores, m.label, pool)
        cs = {run: [(x, y) for _, x, y in pts] for run, pts in labelled.items()}
        base = ab.spec.baseline
        entry: dict[str, Any] = {
            "higher_is_better": m.higher_is_better,
            "points": {run: [{"psnr": estimate(stats.run_mean(x, conf)),
                              "metric": estimate(stats.run_mean(y, conf)),
                              "psnr_seeds": seed_interval(x, conf),
                              "metric_seeds": seed_interval(y, conf),
                              "point": point_label(p), "seeds": int(x.shape[0])}
                             for p, x, y in pts]
                       for run, pts in labelled.items()},
            "levels": [], "difference": {}, "dominance": {}}
        if base in cs and len(cs) > 1 and len(ab.points) > 1:
            lv = stats.common_levels(cs, levels)
            entry["levels"] = lv
            for run, pts in cs.items():
                if run == base:
                    continue
                entry["difference"][run] = [
                    estimate(stats.matched_difference(pts, cs[base], level, conf), level=level)
                    for level in lv]
            for i in range(len(lv)):
                holm_into({r: d[i] for r, d in entry["difference"].items()})
            alpha = 1 - conf
            for run, ds in entry["difference"].items():
                kinds = {verdict(d, m.higher_is_better, alpha) for d in ds}
                entry["dominance"][run] = (stats.NO_RANGE if not ds else
                                           stats.BETTER if kinds == {"better"} else
                                           stats.WORSE if kinds == {"worse"} else
                                           stats.NOT_SEPARATED)
        out[m.label] = entry
    return out


def primary(ab: Ablation, metrics: list[MetricInfo], scores: Scores,
            pools: dict[str, Pool]) -> dict[str, Any] | None:
    """The declared primary endpoint: every run against the baseline on one metric, one set,
    at one matched PSNR-Y level (or one sweep point), Holm over the runs."""
    spec = ab.spec.primary
    if spec is None:
        return None
    conf = ab.spec.report.confidence
    info = next(m for m in metrics if m.label == spec.metric)
    pool = pools[spec.set] if spec.set else pools["all"]
    base = ab.spec.baseline
    out: dict[str, Any] = {"metric": spec.metric, "set": spec.set or "all sets",
                           "psnr": spec.psnr, "point": dict(spec.point),
                           "at_baseline_psnr": spec.at_baseline_psnr,
                           "higher_is_better": info.higher_is_better, "difference": {},
                           "missing": {}}
    if spec.at_baseline_psnr:  # the level: the baseline's mean PSNR-Y at the point
        point = tuple((k, spec.point[k]) for k in ab.spec.sweep)
        base_psnr = matrix(ab, scores, base, point, PSNR, pool)
        if base_psnr is None:
            out["missing"] = {run: "the baseline has no finished job at the primary point yet"
                              for run in ab.runs if run != base}
            return out
        out["psnr"] = float(np.mean(base_psnr))
    if out["psnr"] is None:
        point = tuple((k, spec.point[k]) for k in ab.spec.sweep)
        base_x = matrix(ab, scores, base, point, spec.metric, pool)
        for run in ab.runs:
            x = matrix(ab, scores, run, point, spec.metric, pool)
            if run == base:
                continue
            if x is None or base_x is None:
                out["missing"][run] = "no finished job at the primary point yet"
                continue
            out["difference"][run] = estimate(stats.difference(x, base_x, conf))
    else:
        cs = curves(ab, scores, spec.metric, pool)
        for run in ab.runs:
            if run == base:
                continue
            if run not in cs or base not in cs:
                out["missing"][run] = "no finished jobs yet"
                continue
            try:
                out["difference"][run] = estimate(
                    stats.matched_difference(cs[run], cs[base], out["psnr"], conf))
            except ValueError as exc:
                out["missing"][run] = str(exc)
    holm_into(out["difference"])
    return out


# ------------------------------------------------------------------------- learning curves
def curve_means(ab: Ablation, arm: str, metric: str, sets: list[str],
                keep: dict[str, list[bool]] | None = None,
                names: dict[str, list[str]] | None = None) -> dict[str, dict[int, float]]:
    """Per job label of ``arm``: step -> mean of ``metric`` over the sets' images (duplicates
    dropped when ``keep``/``names`` are given), only at steps where every set was scored, and
    over the images every such step scored (a curve limit changed on resume cannot mix image
    samples)."""
    out: dict[str, dict[int, float]] = {}
    for job in ab.jobs_of(arm):
        by_step: dict[int, dict[str, dict[str, float]]] = {}
        for r in read_log(job.run_dir, CURVE):
            if metric in r.get("scores", {}):
                by_step.setdefault(int(r["step"]), {})[r["set"]] = r["scores"][metric]
        by_step = {k: v for k, v in by_step.items() if all(s in v for s in sets)}
        common = {s: set.intersection(*(set(v[s]) for v in by_step.values()))
                  for s in sets} if by_step else {}
        points = {}
        for step, per_set in by_step.items():
            values = []
            for s in sets:
                dropped = set()
                if keep is not None and names is not None and s in keep:
                    dropped = {n for n, k in zip(names[s], keep[s], strict=True) if not k}
                values += [v for n, v in per_set[s].items() if n in common[s]
                           and n not in dropped]
            if values:
                points[step] = float(np.mean(values))
        if points:
            out[job.label] = points
    return out


def settled(ab: Ablation, metric: str, sets: list[str], point: Point,
            keep: dict[str, list[bool]] | None = None,
            names: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Whether the runs' ranking at ``point`` still moved between the last two curve points
    (Kendall's tau of the seed means), and per run how far its mean moved over that interval
    against its seed spread."""
    arms = {run: next((j.arm for j in ab.jobs if j.run == run and j.point == point), run)
            for run in ab.runs}
    means: dict[str, dict[int, list[float]]] = {}
    for run, arm in arms.items():
        for _, pts in curve_means(ab, arm, metric, sets, keep, names).items():
            for step, v in pts.items():
                means.setdefault(run, {}).setdefault(step, []).append(v)
    steps = sorted({s for per in means.values() for s in per})
    common = [s for s in steps if all(s in per for per in means.values())]
    result: dict[str, Any] = {"metric": metric, "sets": sets, "steps": common, "tau": None,
                              "settled": None, "moves": {}}
    if len(common) < 2 or len(means) < 1:
        return result
    last, prev = common[-1], common[-2]
    a = {r: float(np.mean(per[prev])) for r, per in means.items()}
    b = {r: float(np.mean(per[last])) for r, per in means.items()}
    if len(means) >= 2:
        tau = stats.kendall_tau(a, b)
        result["tau"] = None if math.isnan(tau) else tau
        result["settled"] = result["tau"] == 1.0
    for r, per in means.items():
        spread = (float(np.std(per[last], ddof=1)) if len(per[last]) > 1 else None)
        result["moves"][r] = {"from": a[r], "to": b[r], "change": b[r] - a[r],
                              "seed_sd": spread, "seeds": len(per[last]),
                              "within_spread": (abs(b[r] - a[r]) <= spread
                                                if spread is not None else None)}
    result["interval"] = [prev, last]
    return result

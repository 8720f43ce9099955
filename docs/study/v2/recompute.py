"""Recompute the v2 study's primary endpoint from report.json, independently of plfw's code.

    python docs/study/v2/recompute.py [docs/study/v2/runs/report.json]

Uses only the per-image scores in the JSON, numpy and scipy, and the method as docs/ablation.md
and the report describe it: the matched PSNR-Y level is the baseline's mean PSNR-Y at the
primary point (when the endpoint says ``at_baseline_psnr``) or the declared level; every run's
metric is interpolated linearly at that level between the two sweep points whose mean PSNR-Y
bracket it; run minus baseline gets a t interval from two variance components (per term its
seeds, shared the paired images; Welch-Satterthwaite degrees of freedom, never narrower than the
seed components alone); p-values are Holm-adjusted over the runs. It prints each run's value,
interval and Holm p beside the report's. They should agree to rounding.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
from scipy import stats


def _matrices(report: dict, set_name: str, metric: str) -> dict[tuple[str, str], np.ndarray]:
    """(run, point label) -> (seeds, images) scores of ``metric`` on ``set_name``."""
    rows: dict[tuple[str, str], list[list[float]]] = {}
    for job in report["jobs"].values():
        values = job["scores"].get(set_name, {}).get(metric)
        if values is not None:
            rows.setdefault((job["run"], job["point"]), []).append(values)
    return {k: np.asarray(v, dtype=float) for k, v in rows.items()}


def _interval(terms: list[tuple[float, np.ndarray]], confidence: float) -> dict[str, float]:
    """Value, interval and p of sum(w * mean(x)) for (seeds, images) matrices x."""
    value = sum(w * x.mean() for w, x in terms)
    seeds = [(w * w * np.var(x.mean(axis=1), ddof=1) / len(x), len(x) - 1) for w, x in terms]
    columns = sum(w * x.mean(axis=0) for w, x in terms)
    images = (np.var(columns, ddof=1) / len(columns), len(columns) - 1)

    def pooled(parts: list[tuple[float, int]]) -> tuple[float, float]:
        total = sum(v for v, _ in parts)
        denominator = sum(v * v / d for v, d in parts if v > 0)
        return total, (total * total / denominator if denominator > 0 else math.inf)

    q = 0.5 + confidence / 2
    var, df = pooled([*seeds, images])
    half = stats.t.ppf(q, df) * math.sqrt(var)
    p = 2 * stats.t.sf(abs(value) / math.sqrt(var), df)
    seed_var, seed_df = pooled(seeds)
    if seed_var > 0:
        half = max(half, stats.t.ppf(q, seed_df) * math.sqrt(seed_var))
        p = max(p, 2 * stats.t.sf(abs(value) / math.sqrt(seed_var), seed_df))
    return {"value": value, "low": value - half, "high": value + half, "p": min(p, 1.0)}


def _at(curve: list[tuple[float, np.ndarray]], level: float) -> list[tuple[float, np.ndarray]]:
    """Interpolation terms of a curve [(mean PSNR, metric matrix)] at ``level``."""
    curve = sorted(curve, key=lambda point: point[0])
    for (p0, m0), (p1, m1) in zip(curve, curve[1:], strict=False):
        if p0 <= level <= p1:
            if p1 == p0 or level == p0:
                return [(1.0, m0)]
            t = (level - p0) / (p1 - p0)
            return [(1.0, m1)] if t == 1 else [(1.0 - t, m0), (t, m1)]
    if len(curve) == 1 and curve[0][0] == level:
        return [(1.0, curve[0][1])]
    raise ValueError(f"level {level:.3f} dB outside {curve[0][0]:.3f}-{curve[-1][0]:.3f} dB")


def recompute(report: dict) -> dict[str, dict[str, float]]:
    """Run -> {value, low, high, p, p_holm} of the primary endpoint (run minus baseline)."""
    primary, baseline = report["primary"], report["baseline"]
    set_name = primary["set"]
    confidence = report["statistics_method"]["confidence"]
    psnr = _matrices(report, set_name, "psnr_y")
    metric = _matrices(report, set_name, primary["metric"])
    (value,) = primary["point"].values()  # one sweep key
    point = next(p for (run, p) in psnr if run == baseline and float(p.split("=")[-1]) == value)
    level = (float(psnr[(baseline, point)].mean()) if primary.get("at_baseline_psnr")
             else float(primary["psnr"]))
    curves: dict[str, list[tuple[float, np.ndarray]]] = {}
    for (run, p), x in psnr.items():
        curves.setdefault(run, []).append((float(x.mean()), metric[(run, p)]))
    out = {}
    for run, curve in curves.items():
        if run == baseline:
            continue
        try:
            terms = _at(curve, level) + [(-w, m) for w, m in _at(curves[baseline], level)]
        except ValueError:
            continue  # the report lists it as not compared
        out[run] = _interval(terms, confidence)
    order = sorted(out, key=lambda r: out[r]["p"])
    running = 0.0
    for rank, run in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * out[run]["p"]))
        out[run]["p_holm"] = running
    return out


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/study/v2/runs/report.json")
    report = json.loads(path.read_text(encoding="utf-8"))
    ours = recompute(report)
    theirs = report["primary"]["difference"]
    print(f"primary endpoint: {report['primary']['metric']} on {report['primary']['set']} at "
          f"{report['primary']['psnr']} dB PSNR-Y (run - {report['baseline']})")
    print(f"{'run':<16} {'recomputed':>34}   {'report':>34}")
    for run, r in ours.items():
        t = theirs.get(run, {})
        print(f"{run:<16} {r['value']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}] p={r['p_holm']:.3g}"
              f"   {t.get('value', float('nan')):+.4f} [{t.get('low') or float('nan'):+.4f}, "
              f"{t.get('high') or float('nan'):+.4f}] p={t.get('p_holm') or float('nan'):.3g}")


if __name__ == "__main__":
    main()

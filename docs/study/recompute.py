"""Recompute the study's intervals from the per-image numbers in report.json, independently of plfw.

    python docs/study/recompute.py [docs/study/runs/report.json]

Uses only numpy and the JSON: for every run and metric, the mean over seeds x images and the
paired difference to the baseline, each with a two-level percentile bootstrap (images resampled
once per draw for all runs, then each run's seeds resampled), and prints them beside the values
plfw's report gives. The random numbers differ from plfw's, so interval ends agree to within
bootstrap noise (a few per cent of the interval's width), not exactly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def _boot(x: np.ndarray, imgs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Means of x (seeds x images) over shared image draws and this run's own seed draws."""
    seeds = rng.integers(0, x.shape[0], (len(imgs), x.shape[0]))
    return np.array([x[seeds[d]][:, imgs[d]].mean() for d in range(len(imgs))])


def _end_gap(lo: float, hi: float, ref: dict[str, float]) -> float:
    """Larger distance between our interval ends and the report's, in units of its width."""
    width = ref["high"] - ref["low"]
    return max(abs(lo - ref["low"]), abs(hi - ref["high"])) / width


def main(path: str = "docs/study/runs/report.json", draws: int = 4000) -> None:
    report = json.loads(Path(path).read_text())
    sets = list(report["sets"])
    base = report["baseline"]
    per_run: dict[str, list[str]] = {}
    for job in report["jobs"]:
        per_run.setdefault(job.split("/")[0], []).append(job)
    rng = np.random.default_rng(12345)
    worst, flips = 0.0, 0
    for metric, stats in report["statistics"].items():
        # scores[run]: seeds x images
        scores = {run: np.array([sum((report["jobs"][j]["scores"][s][metric] for s in sets), [])
                                 for j in jobs]) for run, jobs in per_run.items()}
        n_img = scores[base].shape[1]
        imgs = rng.integers(0, n_img, (draws, n_img))

        base_draws = _boot(scores[base], imgs, rng)
        print(f"{metric}: run  mean [low, high] (report)  | difference to {base} "
              "[low, high] (report)")
        for run in scores:
            draws_run = _boot(scores[run], imgs, rng)
            lo, hi = np.percentile(draws_run, [2.5, 97.5])
            ref = stats["mean"][run]
            worst = max(worst, _end_gap(lo, hi, ref))
            line = (f"  {run:16s} {scores[run].mean():9.4f} [{lo:.4f}, {hi:.4f}] "
                    f"({ref['value']:.4f} [{ref['low']:.4f}, {ref['high']:.4f}])")
            if run not in (base, "bicubic"):
                d = draws_run - base_draws
                dlo, dhi = np.percentile(d, [2.5, 97.5])
                dref = stats["difference"][run]
                line += (f"  | {scores[run].mean() - scores[base].mean():+.4f} [{dlo:+.4f}, "
                         f"{dhi:+.4f}] ({dref['value']:+.4f} [{dref['low']:+.4f}, "
                         f"{dref['high']:+.4f}])")
                flips += (dlo > 0 or dhi < 0) != (dref["low"] > 0 or dref["high"] < 0)
                worst = max(worst, _end_gap(dlo, dhi, dref))
            print(line)
    print(f"differences whose 'excludes zero' verdict differs from the report's: {flips}")
    print(f"largest disagreement of an interval end: {worst:.1%} of that interval's width")


if __name__ == "__main__":
    main(*sys.argv[1:2])

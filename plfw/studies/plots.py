"""The pictures of an ablation report: forest plot, perception-distortion plane, learning
curves, loss and balance curves, crops. Each takes numbers already computed
(:mod:`plfw.studies.analysis`) and returns the PNG it wrote, or None when there is nothing to draw.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from plfw.core.errors import UserError
from plfw.studies.ablation import Ablation
from plfw.studies.analysis import curve_means, verdict
from plfw.studies.scores import BICUBIC, Scores
from plfw.training.rundir import read_log

COLOURS = {"better": "#1a7f37", "worse": "#cf222e", "same": "#6e7781"}


def pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UserError("the ablation report draws its plots with matplotlib: "
                        "pip install 'plfw[report]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, dpi: int = 90) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def forest_plot(ab: Ablation, stats: dict[str, Any], path: Path, title: str = "") -> Path | None:
    """One panel per metric: each run's difference to the baseline with its interval, coloured
    by the Holm-corrected verdict."""
    panels = [(m, s) for m, s in stats.items() if s["difference"]]
    if not panels:
        return None
    plt = pyplot()
    alpha = 1 - ab.spec.report.confidence
    runs = [r for r in [*ab.references, *ab.runs] if r != ab.spec.baseline]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 0.42 * len(runs) + 1.6),
                             squeeze=False)
    for ax, (metric, s) in zip(axes[0], panels, strict=True):
        for y, run in enumerate(runs):
            d = s["difference"].get(run)
            if d is None or d["value"] is None:
                continue
            c = COLOURS[verdict(d, s["higher_is_better"], alpha)]
            if d["low"] is not None:
                ax.plot([d["low"], d["high"]], [y, y], color=c, linewidth=2)
            ax.plot([d["value"]], [y], "o", color=c, markersize=5)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(runs)))
        ax.set_yticklabels(runs if ax is axes[0][0] else [""] * len(runs), fontsize=8)
        ax.invert_yaxis()
        arrow = "higher is better" if s["higher_is_better"] else "lower is better"
        ax.set_title(f"{metric}\n({arrow})", fontsize=9)
        ax.set_xlabel(f"run - {ab.spec.baseline}", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(f"{title}Difference to {ab.spec.baseline}, {ab.spec.report.confidence:.0%} "
                 "t intervals (green better, red worse after Holm correction, grey not "
                 "separated)", fontsize=9)
    return _save(fig, path)


def perception_distortion(ab: Ablation, matched: dict[str, Any], path: Path,
                          primary: dict[str, Any] | None = None) -> Path | None:
    """One panel per perceptual metric: PSNR-Y against the metric, one curve per run through
    its sweep points (mean over seeds, both intervals as error bars), the common PSNR range
    shaded and the primary level dashed."""
    panels = [(m, e) for m, e in matched.items() if e["points"]]
    if not panels:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.8), squeeze=False)
    order = [*ab.runs]
    for ax, (metric, e) in zip(axes[0], panels, strict=True):
        for k, run in enumerate(order):
            pts = e["points"].get(run)
            if not pts:
                continue
            xs = [p["psnr"]["value"] for p in pts]
            ys = [p["metric"]["value"] for p in pts]
            xerr = [[_below(p["psnr_seeds"]) for p in pts],
                    [_above(p["psnr_seeds"]) for p in pts]]
            yerr = [[_below(p["metric_seeds"]) for p in pts],
                    [_above(p["metric_seeds"]) for p in pts]]
            width = 2.2 if run == ab.spec.baseline else 1.2
            ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="-o", color=f"C{k}", linewidth=width,
                        markersize=4, capsize=2, elinewidth=0.7, label=run)
            for x, y, p in zip(xs, ys, pts, strict=True):
                if len(ab.points) > 1:
                    ax.annotate(p["point"].split("=")[-1], (x, y), fontsize=6,
                                textcoords="offset points", xytext=(3, 3))
        if e["levels"]:
            ax.axvspan(min(e["levels"]), max(e["levels"]), color="#dddddd", alpha=0.5, lw=0)
        if primary and primary.get("psnr") is not None and primary["metric"] == metric:
            ax.axvline(primary["psnr"], color="black", linestyle="--", linewidth=0.9)
        arrow = "higher is better" if e["higher_is_better"] else "lower is better"
        ax.set_xlabel("PSNR-Y [dB] (distortion: right is better)", fontsize=8)
        ax.set_ylabel(f"{metric} ({arrow})", fontsize=8)
        ax.set_title(metric, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    fig.suptitle("Perception-distortion plane: each run through its sweep points (mean over "
                 f"seeds; bars: {ab.spec.report.confidence:.0%} t interval of the per-seed "
                 "means, i.e. seed spread only;\nthe image sample, shared by all runs, is in "
                 "the tables' intervals); grey: the PSNR range every run covers", fontsize=8)
    return _save(fig, path)


def _below(e: dict[str, Any]) -> float:
    return e["value"] - e["low"] if e.get("low") is not None else 0.0


def _above(e: dict[str, Any]) -> float:
    return e["high"] - e["value"] if e.get("high") is not None else 0.0


def learning_curves(ab: Ablation, metrics: list[str], sets: list[str], path: Path,
                    keep: dict[str, list[bool]] | None = None,
                    names: dict[str, list[str]] | None = None) -> Path | None:
    """One row per sweep point, one panel per curve metric: the metric against updates, each
    seed a thin line, the mean over seeds thick, one colour per run."""
    rows = []
    for point in ab.points:
        panels = []
        for metric in metrics:
            lines = {}
            for run in ab.runs:
                arm = next((j.arm for j in ab.jobs if j.run == run and j.point == point), run)
                per_seed = curve_means(ab, arm, metric, sets, keep, names)
                if per_seed:
                    lines[run] = per_seed
            panels.append((metric, lines))
        if any(lines for _, lines in panels):
            rows.append((point, panels))
    if not rows:
        return None
    plt = pyplot()
    cols = len(metrics)
    fig, axes = plt.subplots(len(rows), cols, figsize=(4.2 * cols, 3.0 * len(rows)),
                             squeeze=False)
    for r, (point, panels) in enumerate(rows):
        for c, (metric, lines) in enumerate(panels):
            ax = axes[r][c]
            for k, run in enumerate(ab.runs):
                per_seed = lines.get(run)
                if not per_seed:
                    continue
                for pts in per_seed.values():
                    steps = sorted(pts)
                    ax.plot(steps, [pts[s] for s in steps], color=f"C{k}", linewidth=0.6,
                            alpha=0.6, marker=".", markersize=3)  # a lone point shows too
                steps = sorted(set.intersection(*(set(p) for p in per_seed.values())))
                if steps:
                    ax.plot(steps, [np.mean([p[s] for p in per_seed.values()]) for s in steps],
                            color=f"C{k}", linewidth=2, label=f"{run} ({len(per_seed)})")
            where = ", ".join(sets)
            label = "" if not point else " at " + ", ".join(f"{k.split('.')[-2]}={v:g}"
                                                            if isinstance(v, float) else
                                                            f"{k}={v}" for k, v in point)
            ax.set_title(f"{metric} on {where}{label}", fontsize=8)
            ax.set_xlabel("GAN updates", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=6)
    fig.suptitle("Learning curves: thin lines seeds, thick the mean over seeds (legend: seeds)",
                 fontsize=8)
    return _save(fig, path, dpi=80)


def loss_curves(ab: Ablation, path: Path) -> Path | None:
    """Per arm, two stacked panels: every logged loss term (unweighted) against the step, and
    below it how hard each weighted term pulls on the SR image (``grad_sr_<term>``: the norm
    of its gradient with respect to the SR batch); one line style per seed."""
    panels = {}
    for arm in dict.fromkeys(j.arm for j in ab.jobs):
        per_seed = {}
        for job in ab.jobs_of(arm):
            by_step = {r["step"]: r for r in read_log(job.run_dir)
                       if any(k.startswith(("loss", "grad_sr_")) for k in r)}
            if by_step:
                per_seed[job.label] = [by_step[s] for s in sorted(by_step)]
        if per_seed:
            panels[arm] = per_seed
    if not panels:
        return None
    plt = pyplot()
    cols = min(4, len(panels))
    blocks = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(2 * blocks, cols, figsize=(3.8 * cols, 4.6 * blocks),
                             squeeze=False)
    styles = ["-", "--", ":", "-."]
    for n, (arm, per_seed) in enumerate(panels.items()):
        for row, prefix in enumerate(("loss", "grad_sr_")):
            ax = axes[2 * (n // cols) + row][n % cols]
            for k, (_, records) in enumerate(per_seed.items()):
                keys = sorted({key for r in records for key in r if key.startswith(prefix)})
                for j, key in enumerate(keys):
                    pts = [(r["step"], r[key]) for r in records if key in r and r[key] > 0]
                    if pts:
                        ax.plot(*zip(*pts, strict=True), styles[k % 4], color=f"C{j}",
                                linewidth=1,
                                label=key.removeprefix("grad_sr_") if k == 0 else None)
            ax.set_yscale("log")
            what = "loss terms" if prefix == "loss" else "pull |d(weighted term)/d SR|"
            ax.set_title(f"{arm}, {len(per_seed)} seed(s)\n{what}", fontsize=7)
            ax.set_xlabel("step", fontsize=7)
            ax.tick_params(labelsize=6)
            if ax.lines:
                ax.legend(fontsize=6)
    for n in range(len(panels), blocks * cols):
        for row in (0, 1):
            axes[2 * (n // cols) + row][n % cols].axis("off")
    return _save(fig, path, dpi=80)


def crop_grid(ab: Ablation, scores: Scores, path: Path) -> Path | None:
    from plfw.imaging.visuals import grid, save_png

    columns = [c for c in [BICUBIC, *ab.references, *ab.runs, "HR"] if scores.crops.get(c)]
    if not scores.picks or len(columns) < 2:
        return None
    keys = [(s, i) for s, i, _ in scores.picks if all((s, i) in scores.crops[c] for c in columns)]
    rows = [[scores.crops[c][k] for c in columns] for k in keys]
    names = [f"{s}/{name}" for s, i, name in scores.picks if (s, i) in keys]
    image = grid(rows, columns, names, cell=ab.spec.report.crop * ab.spec.report.zoom)
    return save_png(image, path)


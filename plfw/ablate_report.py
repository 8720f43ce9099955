"""The ablation report: scores compared with intervals, an answer written from them, and pictures.

Scores come from :mod:`plfw.ablate_scores`; the statistics (:mod:`plfw.bootstrap`) pool the
images of all sets, and per-set tables are shown too. The "answer" paragraph is generated from
the intervals alone.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from plfw import bootstrap
from plfw.ablate_scores import BICUBIC, MetricInfo, Scores, score
from plfw.ablation import Ablation, finished_model, read_state, training_networks
from plfw.checkpoint import atomic_write_bytes
from plfw.errors import UserError


# ------------------------------------------------------------------------- statistics
def _matrix(ab: Ablation, scores: Scores, run: str, metric: str,
            sets: list[str]) -> list[list[float]] | None:
    """(seeds, images) scores of ``run`` for ``metric``, images of ``sets`` in order."""
    labels = [BICUBIC] if run == BICUBIC else [j.label for j in ab.jobs_of(run)]
    rows = []
    for label in labels:
        per_set = scores.values.get(label)
        if per_set is None or any(metric not in per_set[s] for s in sets):
            continue
        rows.append([v for s in sets for v in per_set[s][metric]])
    return rows or None


def statistics(ab: Ablation, metrics: list[MetricInfo], scores: Scores,
               sets: list[str]) -> dict[str, Any]:
    """Means, intervals, baseline differences and seed spreads per metric over ``sets``."""
    rep = ab.spec.report
    out: dict[str, Any] = {}
    for m in metrics:
        mats = {}
        for run in [BICUBIC, *ab.runs]:
            mat = _matrix(ab, scores, run, m.label, sets)
            if mat is not None:
                mats[run] = mat
        baseline = ab.spec.baseline if ab.spec.baseline in mats else None
        means, diffs = bootstrap.compare(mats, baseline, rep.bootstrap, rep.confidence)
        out[m.label] = {
            "higher_is_better": m.higher_is_better,
            "seeds": {r: len(v) for r, v in mats.items()},
            "mean": {r: vars(i) for r, i in means.items()},
            "difference": {r: vars(i) for r, i in diffs.items() if r != BICUBIC},
            "seed_means": {r: list(bootstrap.seed_spread(v).means) for r, v in mats.items()},
        }
    return out


def _verdict(diff: dict[str, float], higher_is_better: bool) -> str:
    if not (diff["low"] > 0 or diff["high"] < 0):
        return "same"
    return "better" if (diff["value"] > 0) == higher_is_better else "worse"


def answer(ab: Ablation, stats: dict[str, Any], images: int) -> list[str]:
    """The generated 'answer' paragraph(s): what the intervals show, and nothing else."""
    base = ab.spec.baseline
    if base is None:
        return ["No `baseline:` is set in the ablation file, so no run is compared with another."]
    level = f"{ab.spec.report.confidence:.0%}"
    lines: list[str] = []
    better: dict[str, list[str]] = {}
    worse: dict[str, list[str]] = {}
    same: dict[str, list[str]] = {}
    spread_notes: list[str] = []
    checked = 0  # marked differences whose runs have a seed range to compare with
    single_seed: set[str] = set()
    compared: set[str] = set()
    for metric, s in stats.items():
        if base not in s["mean"]:
            continue
        for run, diff in s["difference"].items():
            compared.add(run)
            if min(s["seeds"].get(run, 0), s["seeds"][base]) < 2:
                single_seed.add(run)
            kind = _verdict(diff, s["higher_is_better"])
            {"better": better, "worse": worse, "same": same}[kind].setdefault(
                run, []).append(metric)
            if kind != "same":
                ranges = [max(v) - min(v) for v in (s["seed_means"][run], s["seed_means"][base])
                          if len(v) > 1]
                checked += bool(ranges)
                if ranges and abs(diff["value"]) <= max(ranges):
                    spread_notes.append(f"{run} on {metric} (difference {diff['value']:+.4g}, "
                                        f"seed range up to {max(ranges):.4g})")
    if not compared:
        if any(base in s["mean"] for s in stats.values()):
            return [f"Only the baseline `{base}` has finished jobs so far: no other run to "
                    "compare it with yet."]
        return [f"The baseline `{base}` has no finished job yet, so nothing is compared."]
    seeds = stats[next(iter(stats))]["seeds"].get(base, 0)
    lines.append(f"Compared with the baseline `{base}` ({seeds} seed(s)) on {images} images, "
                 f"at {level} (two-level bootstrap over images and seeds):")
    lines.append("")
    for title, group in (("Better than the baseline", better), ("Worse than the baseline", worse),
                         ("Not distinguishable from the baseline", same)):
        if group:
            items = "; ".join(f"`{r}` ({', '.join(ms)})" for r, ms in group.items())
            lines.append(f"- {title}: {items}.")
    if not better:
        lines.append(f"- No run is better than `{base}` on any metric at {level}.")
    lines.append("")
    if spread_notes:
        lines.append("For these differences the interval excludes zero, but the difference is "
                     "not larger than the spread between one run's seeds, so more seeds or "
                     "longer runs could change them: " + "; ".join(spread_notes) + ".")
    elif checked:
        lines.append("Every difference that the intervals mark (where both runs have two or more "
                     "seeds) is larger than the spread between the per-seed means of either run.")
    if single_seed:
        lines.append("")
        lines.append("Runs with fewer than two finished seeds (their intervals cover the image "
                     "sample only, not training noise): " + ", ".join(sorted(single_seed)) + ".")
    return lines


# ------------------------------------------------------------------------- pictures
def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UserError("the ablation report draws its plots with matplotlib: "
                        "pip install 'plfw[report]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def forest_plot(ab: Ablation, stats: dict[str, Any], path: Path) -> Path | None:
    """One panel per metric: each run's difference to the baseline with its interval."""
    panels = [(m, s) for m, s in stats.items() if s["difference"]]
    if not panels:
        return None
    plt = _pyplot()
    runs = [r for r in ab.runs if r != ab.spec.baseline]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 0.42 * len(runs) + 1.6),
                             squeeze=False)
    colours = {"better": "#1a7f37", "worse": "#cf222e", "same": "#6e7781"}
    for ax, (metric, s) in zip(axes[0], panels, strict=True):
        for y, run in enumerate(runs):
            d = s["difference"].get(run)
            if d is None:
                continue
            c = colours[_verdict(d, s["higher_is_better"])]
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
    fig.suptitle(f"Difference to {ab.spec.baseline}, {ab.spec.report.confidence:.0%} intervals "
                 "(green better, red worse, grey within noise)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _crop_grid(ab: Ablation, scores: Scores, path: Path) -> Path | None:
    from plfw.visuals import grid, save_png

    columns = [c for c in [BICUBIC, *ab.runs, "HR"] if scores.crops.get(c)]
    if not scores.picks or len(columns) < 2:
        return None
    keys = [(s, i) for s, i, _ in scores.picks if all((s, i) in scores.crops[c] for c in columns)]
    rows = [[scores.crops[c][k] for c in columns] for k in keys]
    names = [f"{s}/{name}" for s, i, name in scores.picks if (s, i) in keys]
    image = grid(rows, columns, names, cell=ab.spec.report.crop * ab.spec.report.zoom)
    return save_png(image, path)


def _read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
    return rows


def loss_curves(ab: Ablation, path: Path) -> Path | None:
    """One panel per run: every logged loss term against the step, one line style per seed."""
    panels = {}
    for run in ab.runs:
        per_seed = {}
        for job in ab.jobs_of(run):
            by_step = {r["step"]: r for r in _read_metrics(job.run_dir)
                       if any(k.startswith("loss") for k in r)}
            if by_step:
                per_seed[job.label] = [by_step[s] for s in sorted(by_step)]
        if per_seed:
            panels[run] = per_seed
    if not panels:
        return None
    plt = _pyplot()
    cols = min(4, len(panels))
    rows_n = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.8 * cols, 2.8 * rows_n), squeeze=False)
    styles = ["-", "--", ":", "-."]
    for ax, (run, per_seed) in zip(axes.flat, panels.items(), strict=False):
        for k, (_, records) in enumerate(per_seed.items()):
            keys = sorted({key for r in records for key in r if key.startswith("loss")})
            for j, key in enumerate(keys):
                pts = [(r["step"], r[key]) for r in records if key in r and r[key] > 0]
                if pts:
                    ax.plot(*zip(*pts, strict=True), styles[k % 4], color=f"C{j}",
                            linewidth=1, label=key if k == 0 else None)
        ax.set_yscale("log")
        ax.set_title(f"{run} ({len(per_seed)} seed(s))", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------- the report
def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path.resolve())


def _fmt(value: float, metric: str) -> str:
    return f"{value:.2f}" if metric.startswith("psnr") else f"{value:.4f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    hours, rest = divmod(int(round(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _tables(ab: Ablation, stats: dict[str, Any], status: dict[str, str]) -> list[str]:
    metrics = list(stats)
    arrows = {m: "↑" if stats[m]["higher_is_better"] else "↓" for m in metrics}
    head = ["run", "seeds", *[f"{m} {arrows[m]}" for m in metrics], "train time / seed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in [BICUBIC, *ab.runs]:
        jobs = ab.jobs_of(run)
        done = sum(status.get(j.label) == "finished" for j in jobs)
        cells = [f"**{run}**" if run == ab.spec.baseline else run,
                 "-" if run == BICUBIC else f"{done}/{len(jobs)}"]
        for m in metrics:
            mean = stats[m]["mean"].get(run)
            cells.append("(trained with it)" if mean is None and run != BICUBIC and done else
                         "-" if mean is None else
                         f"{_fmt(mean['value'], m)} [{_fmt(mean['low'], m)}, "
                         f"{_fmt(mean['high'], m)}]")
        secs = [read_state(j.run_dir).get("train_seconds") for j in jobs
                if status.get(j.label) == "finished"]
        secs = [s for s in secs if s]
        cells.append(_duration(sum(secs) / len(secs)) if secs else "-")
        lines.append("| " + " | ".join(cells) + " |")
    if ab.spec.baseline is None:
        return lines
    lines += ["", f"Difference to `{ab.spec.baseline}` (run − baseline) with its "
              f"{ab.spec.report.confidence:.0%} interval; **bold**: the interval excludes zero "
              "(▲ better, ▼ worse).", ""]
    head = ["run", *[f"Δ {m}" for m in metrics]]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in ab.runs:
        if run == ab.spec.baseline:
            continue
        cells = [run]
        for m in metrics:
            d = stats[m]["difference"].get(run)
            if d is None:
                cells.append("-")
                continue
            text = (f"{d['value']:+.4g} [{d['low']:+.4g}, {d['high']:+.4g}]")
            kind = _verdict(d, stats[m]["higher_is_better"])
            cells.append(text if kind == "same" else
                         f"**{text}** {'▲' if kind == 'better' else '▼'}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_report(ab: Ablation, device: str = "auto", log: Any = print,
                 report_dir: Path | None = None) -> Path:
    """Score every finished job and write report.md, report.json and the PNGs."""
    started = time.perf_counter()
    _pyplot()  # fail before the slow part when matplotlib is missing
    out = report_dir or ab.out
    out.mkdir(parents=True, exist_ok=True)
    pairs, metrics, scores, status = score(ab, device, log)
    sets = list(pairs)
    images = sum(len(p) for p in pairs.values())
    stats = statistics(ab, metrics, scores, sets)
    per_set = {s: statistics(ab, metrics, scores, [s]) for s in sets} if len(sets) > 1 else {}
    forest = forest_plot(ab, stats, out / "forest.png")
    crops = _crop_grid(ab, scores, out / "crops.png")
    curves = loss_curves(ab, out / "loss_curves.png")
    train_total = sum(read_state(j.run_dir).get("train_seconds") or 0.0 for j in ab.jobs)
    finished = sum(v == "finished" for v in status.values())
    common = "<br>".join(f"`{o}`" for o in ab.overrides) or "none"
    set_text = ", ".join(f"{s} ({len(p)})" for s, p in pairs.items())
    rep = ab.spec.report
    lines = [
        f"# Ablation report: {ab.stem}", "",
        f"Base config `{ab.base.name}`; overrides shared by every run: {common}. "
        f"{finished} of {len(ab.jobs)} jobs finished "
        f"({len(ab.runs)} runs x {len(ab.spec.seeds or [None])} seed(s)). Scored at "
        f"x{ab.scale} on {images} images: {set_text}.", "",
        "## Answer", "", *answer(ab, stats, images), "",
        "## Results", "",
        f"Mean over seeds and all {images} images with its {rep.confidence:.0%} interval "
        f"({bootstrap.METHOD}; {rep.bootstrap} resamples). ↑ higher is better, ↓ lower is "
        "better. A run is not scored with a metric whose network its losses trained with.", "",
        *_tables(ab, stats, status), "",
    ]
    if forest is not None:
        lines += [f"![forest plot]({forest.name})", ""]
    if per_set:
        lines += ["## Per evaluation set", ""]
        for s, st in per_set.items():
            lines += [f"### {s} ({len(pairs[s])} images)", "", *_tables(ab, st, status), ""]
    lines += ["## Runs", "", "| run | overrides |", "|---|---|"]
    for run, items in ab.runs.items():
        lines.append(f"| {run} | " + ("<br>".join(f"`{o}`" for o in items) or "-") + " |")
    command = " ".join(["plfw ablate", str(ab.path), *ab.extra, "--out", str(ab.out)])
    lines += ["", f"Command: `{command}`. All training together: {_duration(train_total)} "
              f"(wall time, summed over jobs and resumptions); scoring and this report: "
              f"{_duration(time.perf_counter() - started)}.", ""]
    if ab.spec.notes:
        lines += ["## What this comparison can and cannot show", "", ab.spec.notes.strip(), ""]
    if crops is not None:
        lines += ["## Crops", "", f"The most detailed {rep.crop}x{rep.crop} HR window of "
                  f"{len(scores.picks)} images, enlarged {rep.zoom}x (nearest neighbour); "
                  "each run's first finished seed.", "", f"![crops]({crops.name})", ""]
    if curves is not None:
        lines += ["## Loss curves", "", "Logged loss terms per run (unweighted; `loss` is the "
                  "weighted total), one line style per seed.", "",
                  f"![loss curves]({curves.name})", ""]
    report = out / "report.md"
    atomic_write_bytes(report, "\n".join(lines).encode())
    data = {
        "ablation": str(ab.path), "baseline": ab.spec.baseline, "scale": ab.scale,
        "bootstrap": {"method": bootstrap.METHOD, "resamples": rep.bootstrap,
                      "confidence": rep.confidence, "rng": "numpy default_rng(0)"},
        "sets": {s: [p.name for p in ps] for s, ps in pairs.items()},
        # as the ablation gives them (relative to the working directory, like all plfw paths)
        "set_folders": {s: {"hr": ev.hr, "lr": ev.lr, "limit": ev.limit}
                        for s, ev in ab.sets.items()},
        # relative to this report's folder when inside it, so a moved or cloned study still works
        "models": {j.label: _relative(m, out) for j in ab.jobs
                   if (m := finished_model(j)) is not None},
        "metrics": {m.label: {"spec": m.spec, "higher_is_better": m.higher_is_better,
                              "networks": list(m.networks)} for m in metrics},
        "status": status,
        "jobs": {label: {"run": label.split("/")[0], "scores": v}
                 for label, v in scores.values.items()},
        "training": {j.label: {"train_seconds": read_state(j.run_dir).get("train_seconds"),
                               "trained_with": sorted(training_networks(j.config))}
                     for j in ab.jobs},
        "statistics": stats, "statistics_per_set": per_set,
    }
    atomic_write_bytes(out / "report.json", json.dumps(data, indent=1).encode())
    return report

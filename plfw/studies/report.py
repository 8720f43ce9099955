"""The ablation report: what the scores show, with intervals, written from the numbers alone.

Scores come from :mod:`plfw.studies.scores`, the statistics from :mod:`plfw.studies.analysis` (t
intervals with seeds as the unit, Holm-corrected comparisons, matched distortion, learning
curves), the pictures from :mod:`plfw.studies.plots`. The report leads with the primary endpoint
when the ablation file declares one; every other comparison is labelled exploratory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from plfw.core.registry import Registry
from plfw.storage.checkpoint import atomic_write_bytes
from plfw.studies import analysis as st
from plfw.studies import intervals as stats_mod
from plfw.studies import plots
from plfw.studies.ablation import Ablation, Point, point_label
from plfw.studies.analysis import verdict
from plfw.studies.cells import fmt, interval_text, marked
from plfw.studies.compute import compute_text, duration
from plfw.studies.job_files import finished_model, read_state
from plfw.studies.pairs import pair_lines, pairwise
from plfw.studies.scores import BICUBIC, score
from plfw.studies.trained_with import training_networks


def answer(ab: Ablation, stats: dict[str, Any], images: int) -> list[str]:
    """The generated 'answer' paragraph(s): what the intervals show, and nothing else."""
    base = ab.spec.baseline
    if base is None:
        return ["No `baseline:` is set in the ablation file, so no run is compared with another."]
    level = f"{ab.spec.report.confidence:.0%}"
    alpha = 1 - ab.spec.report.confidence
    lines: list[str] = []
    better: dict[str, list[str]] = {}
    worse: dict[str, list[str]] = {}
    same: dict[str, list[str]] = {}
    spread_notes: list[str] = []
    checked = 0  # marked differences whose runs have a seed range to compare with
    untested: set[str] = set()  # no interval (a side with one seed): neither same nor different
    compared: set[str] = set()
    for metric, s in stats.items():
        if base not in s["mean"]:
            continue
        for run, diff in s["difference"].items():
            compared.add(run)
            if diff.get("low") is None:
                untested.add(run)
                continue
            kind = verdict(diff, s["higher_is_better"], alpha)
            {"better": better, "worse": worse, "same": same}[kind].setdefault(
                run, []).append(metric)
            if kind != "same":
                ranges = [max(v) - min(v) for v in (s["seed_means"].get(run, []),
                                                    s["seed_means"][base]) if len(v) > 1]
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
    count = sum(len(s["difference"]) for s in stats.values())
    lines.append(f"Compared with the baseline `{base}` ({seeds} seed(s)) on {images} images, "
                 f"at {level} (t intervals with seeds as the unit and images paired; a "
                 f"difference counts when it holds after Holm correction over the runs, per "
                 f"metric; {count} comparisons in all):")
    lines.append("")
    for title, group in (("Better than the baseline", better), ("Worse than the baseline", worse),
                         ("Not distinguishable from the baseline", same)):
        if group:
            items = "; ".join(f"`{r}` ({', '.join(ms)})" for r, ms in group.items())
            lines.append(f"- {title}: {items}.")
    if not better and compared - untested:
        lines.append(f"- No run is shown better than `{base}` on any metric at {level}.")
    lines.append("")
    if spread_notes:
        lines.append("For these differences the interval excludes zero, but the difference is "
                     "not larger than the spread between one run's seeds, so more seeds or "
                     "longer runs could change them: " + "; ".join(spread_notes) + ".")
    elif checked:
        lines.append("Every difference that the intervals mark (where both runs have two or more "
                     "seeds) is larger than the spread between the per-seed means of either run.")
    if untested:
        lines += ["", "These runs' differences have no interval (they or the baseline have "
                  "fewer than two finished seeds: the seed-to-seed variance is unknown), so "
                  f"nothing is claimed for them: {', '.join(f'`{r}`' for r in sorted(untested))}."]
    return lines


# ------------------------------------------------------------------------- the report
def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path.resolve())


def _tables(ab: Ablation, stats: dict[str, Any], status: dict[str, str],
            point: Point) -> list[str]:
    metrics = list(stats)
    alpha = 1 - ab.spec.report.confidence
    arrows = {m: "↑" if stats[m]["higher_is_better"] else "↓" for m in metrics}
    head = ["run", "seeds", *[f"{m} {arrows[m]}" for m in metrics], "train time / seed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in [BICUBIC, *ab.references, *ab.runs]:
        jobs = [j for j in ab.jobs if j.run == run and j.point == point]
        done = sum(status.get(j.label, "").startswith("finished") for j in jobs)
        fixed = run == BICUBIC or run in ab.references
        cells = [f"**{run}**" if run == ab.spec.baseline else run,
                 "-" if fixed else f"{done}/{len(jobs)}"]
        for m in metrics:
            mean = stats[m]["mean"].get(run)
            cells.append("(trained with it)" if mean is None and not fixed and done else
                         "-" if mean is None else interval_text(mean, m))
        secs = [read_state(j.run_dir).get("train_seconds") for j in jobs
                if status.get(j.label, "").startswith("finished")]
        secs = [s for s in secs if s]
        cells.append(duration(sum(secs) / len(secs)) if secs else "-")
        lines.append("| " + " | ".join(cells) + " |")
    if ab.spec.baseline is None:
        return lines
    lines += ["", f"Difference to `{ab.spec.baseline}` (run − baseline) with its "
              f"{ab.spec.report.confidence:.0%} t interval and Holm-adjusted p (over the runs, "
              "per metric); **bold**: it holds after the correction (▲ better, ▼ worse).", ""]
    head = ["run", *[f"Δ {m}" for m in metrics]]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in [*ab.references, *ab.runs]:
        if run == ab.spec.baseline:
            continue
        cells = [run]
        for m in metrics:
            d = stats[m]["difference"].get(run)
            cells.append("-" if d is None else marked(d, stats[m]["higher_is_better"], alpha))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _primary_lines(ab: Ablation, prim: dict[str, Any]) -> list[str]:
    alpha = 1 - ab.spec.report.confidence
    at = ", ".join(f"{k}={v}" for k, v in prim["point"].items())
    where = (f"at a matched PSNR-Y of {prim['psnr']:g} dB" if prim["psnr"] is not None
             else "at " + at)
    if prim.get("at_baseline_psnr"):
        where = (f"at the PSNR-Y `{ab.spec.baseline}` reaches at {at} ("
                 + (f"{prim['psnr']:.2f} dB" if prim["psnr"] is not None else "not yet known")
                 + "; the other runs interpolated there)")
    arrow = "higher" if prim["higher_is_better"] else "lower"
    lines = [f"Declared in the ablation file before training: **{prim['metric']}** ({arrow} is "
             f"better) on **{prim['set']}**, {where}, each run against `{ab.spec.baseline}`, "
             f"{ab.spec.report.confidence:.0%} t intervals, Holm-corrected over "
             f"{len(prim['difference'])} comparison(s).", "",
             "| run | run − baseline | Holm p | verdict |", "|---|---|---|---|"]
    for run, d in prim["difference"].items():
        kind = verdict(d, prim["higher_is_better"], alpha)
        p = d.get("p_holm")
        words = {"better": "better than the baseline", "worse": "worse",
                 "same": "not separated"}[kind]
        lines.append(f"| {run} | {interval_text(d, signed=True)} | "
                     f"{'-' if p is None else f'{p:.2g}'} | {words} |")
    for run, why in prim["missing"].items():
        lines.append(f"| {run} | - | - | not compared: {why} |")
    better = [r for r, d in prim["difference"].items()
              if verdict(d, prim["higher_is_better"], alpha) == "better"]
    base, missing = ab.spec.baseline, len(prim["missing"])
    if better:
        answer = (f"Runs better than `{base}` on the primary endpoint: "
                  + ", ".join(f"`{r}`" for r in better) + ".")
    elif not prim["difference"]:  # nothing was compared: that says nothing about "better"
        answer = (f"No run could be compared with `{base}` on the primary endpoint (why: "
                  f"above), so it cannot say whether any is better.")
    else:
        answer = (f"No run compared is better than `{base}` on the primary endpoint"
                  + (f"; {missing} could not be compared (why: above)." if missing else "."))
    return [*lines, "", answer]


def _matched_lines(ab: Ablation, matched: dict[str, Any], exploratory: bool) -> list[str]:
    alpha = 1 - ab.spec.report.confidence
    lines = []
    for metric, e in matched.items():
        if not e["levels"]:
            continue
        lv = e["levels"]
        lines += [f"**{metric}** ({'higher' if e['higher_is_better'] else 'lower'} is better) at "
                  f"matched PSNR-Y, run − `{ab.spec.baseline}`"
                  + (" (exploratory)" if exploratory else "") + ":", "",
                  "| run | " + " | ".join(f"{v:.{2 if max(lv) - min(lv) > 0.1 else 3}f} dB"
                                          for v in lv) + " | over the range |",
                  "|---|" + "---|" * (len(lv) + 1)]
        for run, ds in e["difference"].items():
            cells = [marked(d, e["higher_is_better"], alpha) for d in ds]
            lines.append(f"| {run} | " + " | ".join(cells) + f" | {e['dominance'][run]} |")
        lines.append("")
    if not lines:
        return ["No two runs' curves share a PSNR-Y range yet (or there is no sweep), so "
                "nothing is compared at matched distortion.", ""]
    return lines


def _settled_lines(result: dict[str, Any]) -> list[str]:
    if result["tau"] is None and not result["moves"]:
        return []
    prev, last = result.get("interval", [None, None])
    lines = [f"**{result['metric']}** on {', '.join(result['sets'])}, between update {prev} "
             f"and {last}: "
             + ("ranking unchanged (Kendall's τ = 1)" if result["settled"] else
                f"the ranking still moves (Kendall's τ = {result['tau']:.2f}): **not settled**"
                if result["tau"] is not None else "one run only"), "",
             "| run | at " + str(prev) + " | at " + str(last) + " | change | seed SD | "
             "moved less than its seed spread |", "|---|---|---|---|---|---|"]
    m = result["metric"]
    for run, mv in result["moves"].items():
        within = {True: "yes", False: "**no**", None: "- (one seed)"}[mv["within_spread"]]
        sd = "-" if mv["seed_sd"] is None else f"{mv['seed_sd']:.4g}"
        lines.append(f"| {run} | {fmt(mv['from'], m)} | {fmt(mv['to'], m)} | "
                     f"{mv['change']:+.4g} | {sd} | {within} |")
    return [*lines, ""]


def _curve_metrics(ab: Ablation) -> list[str]:
    return [m if isinstance(m, str) else str(m.get("name")) for m in ab.spec.eval.curve.metrics]


def write_curves(ab: Ablation, out: Path) -> list[Path]:
    """The learning and loss curves of every job so far (finished or still training) from its
    logs alone: no scoring, so they can be looked at while a study runs."""
    out.mkdir(parents=True, exist_ok=True)
    written = [plots.learning_curves(ab, _curve_metrics(ab), ab.spec.eval.curve.sets
                                     or list(ab.sets), out / "learning_curves.png")
               if ab.spec.eval.curve.at else None,
               plots.loss_curves(ab, out / "loss_curves.png")]
    return [p for p in written if p is not None]


def write_report(ab: Ablation, registry: Registry, device: str = "auto", log: Any = print,
                 report_dir: Path | None = None) -> Path:
    """Score every finished job and write report.md, report.json and the PNGs."""
    started = time.perf_counter()
    plots.pyplot()  # fail before the slow part when matplotlib is missing
    out = report_dir or ab.out
    out.mkdir(parents=True, exist_ok=True)
    pairs, metrics, scores, status = score(ab, registry, device, log)
    sets = list(pairs)
    keep, dup_notes = st.duplicates(pairs)
    for note in dup_notes:
        log(f"plfw ablate: warning: {note}")
    pools = {"all": st.Pool(sets, keep),
             **{s: st.Pool([s], {s: [True] * len(pairs[s])}) for s in sets}}
    images = pools["all"].images
    points = ab.points
    spec_primary = ab.spec.primary
    main_point = (tuple((k, spec_primary.point[k]) for k in ab.spec.sweep)
                  if spec_primary is not None and spec_primary.point else points[len(points) // 2])
    per_point = {p: st.setting(ab, metrics, scores, pools["all"], p) for p in points}
    per_set = ({s: st.setting(ab, metrics, scores, pools[s], main_point) for s in sets}
               if len(sets) > 1 else {})
    prim = st.primary(ab, metrics, scores, pools)
    matched_pool = pools[spec_primary.set] if spec_primary and spec_primary.set else pools["all"]
    matched = st.matched(ab, metrics, scores, matched_pool) if len(points) > 1 else {}
    pair_info = next((m for m in metrics if spec_primary and m.label == spec_primary.metric), None)
    pairs_found = (pairwise(ab, pair_info, scores, matched_pool)
                   if matched and pair_info is not None else None)
    curve_sets = ab.spec.eval.curve.sets or list(ab.sets)
    names = {s: [p.name for p in pairs[s]] for s in sets}
    settled = [st.settled(ab, m, curve_sets, main_point, keep, names)
               for m in _curve_metrics(ab)] if ab.spec.eval.curve.at else []

    pictures = {
        "forest": plots.forest_plot(ab, per_point[main_point], out / "forest.png"),
        "pd": plots.perception_distortion(ab, matched, out / "perception_distortion.png", prim),
        "curves": (plots.learning_curves(ab, _curve_metrics(ab), curve_sets,
                                         out / "learning_curves.png", keep, names)
                   if ab.spec.eval.curve.at else None),
        "crops": plots.crop_grid(ab, scores, out / "crops.png"),
        "loss": plots.loss_curves(ab, out / "loss_curves.png"),
    }
    finished = sum(v.startswith("finished") for v in status.values())
    common = "<br>".join(f"`{o}`" for o in ab.overrides) or "none"
    set_text = ", ".join(f"{s} ({len(p)})" for s, p in pairs.items())
    rep = ab.spec.report
    sweep_text = ("; sweep: " + ", ".join(f"`{k}` over {v}" for k, v in ab.spec.sweep.items())
                  if ab.spec.sweep else "")
    lines = [
        f"# Ablation report: {ab.stem}", "",
        f"Base config `{ab.base.name}`; overrides shared by every run: {common}{sweep_text}. "
        f"{finished} of {len(ab.jobs)} jobs finished ({len(ab.runs)} runs x {len(points)} "
        f"sweep point(s), seeds {ab.spec.seeds or 'none'}"
        + (f" plus extra seeds at {len(ab.spec.extra_seeds)} point(s)"
           if ab.spec.extra_seeds else "") + f"). Scored at x{ab.scale} on {set_text}"
        + (f"; pooled over {images} distinct images" if dup_notes else "") + ".", ""]
    if dup_notes:
        lines += ["Duplicate evaluation images, counted once when sets are pooled: "
                  + "; ".join(dup_notes) + ".", ""]
    exploratory = prim is not None
    if prim is not None:
        lines += ["## Primary endpoint", "", *_primary_lines(ab, prim), "",
                  "Everything below is exploratory: secondary metrics, other sets, other "
                  "settings. Their corrections cover each table's own comparisons only.", ""]
    label = point_label(main_point)
    lines += [f"## Answer at a single setting{' (exploratory)' if exploratory else ''}", "",
              *([f"At {label}:", ""] if label else []),
              *answer(ab, per_point[main_point], images), ""]
    if matched:
        lines += ["## Perception–distortion plane", "",
                  "Each run is a curve through its sweep points (Blau & Michaeli, CVPR 2018: "
                  "no method is both least distorted and most natural, so methods are compared "
                  "at equal distortion). Each run's metric is interpolated linearly between the "
                  "two sweep points whose mean PSNR-Y brackets a level, at levels spread over "
                  "the PSNR-Y range every run covers; the interpolation weights are taken as "
                  "fixed.", ""]
        if pictures["pd"] is not None:
            lines += [f"![perception-distortion plane]({pictures['pd'].name})", ""]
        lines += _matched_lines(ab, matched, exploratory)
        if pairs_found is not None:
            lines += ["### Every two runs at matched distortion (exploratory)", "",
                      *pair_lines(pairs_found, ab.spec.report.confidence)]
    if ab.spec.eval.curve.at:
        lines += ["## Learning curves", "",
                  f"Scored inside every job at updates {ab.spec.eval.curve.at} on "
                  f"{', '.join(curve_sets)} ({', '.join(_curve_metrics(ab))}). A ranking that "
                  "still changes between the last two points is reported as not settled.", ""]
        if pictures["curves"] is not None:
            lines += [f"![learning curves]({pictures['curves'].name})", ""]
        for result in settled:
            lines += _settled_lines(result)
    lines += ["## Results" + (" at each sweep point" if len(points) > 1 else ""), "",
              f"Mean over seeds and the {images} pooled images with its {rep.confidence:.0%} "
              f"interval ({stats_mod.METHOD}). ↑ higher is better, ↓ lower is better. A run is "
              "not scored with a metric whose network its losses trained with; bicubic and "
              "reference models are deterministic (their interval covers the images only).", ""]
    for p in points:
        if len(points) > 1:
            lines += [f"### {point_label(p)}", ""]
        lines += [*_tables(ab, per_point[p], status, p), ""]
    if pictures["forest"] is not None:
        lines += [f"![forest plot]({pictures['forest'].name})", ""]
    if per_set:
        lines += ["## Per evaluation set" + (f" at {label}" if label else ""), ""]
        for s, stt in per_set.items():
            lines += [f"### {s} ({len(pairs[s])} images)", "",
                      *_tables(ab, stt, status, main_point), ""]
    lines += ["## Runs", "", "| run | overrides |", "|---|---|"]
    for run, items in ab.runs.items():
        lines.append(f"| {run} | " + ("<br>".join(f"`{o}`" for o in items) or "-") + " |")
    for name, path in ab.references.items():
        lines.append(f"| {name} (reference) | `{path}` |")
    models = [m for j in ab.jobs if (m := finished_model(j)) is not None]
    size = sum(m.stat().st_size for m in models) / 1e6
    kept = "fp16 safetensors" if ab.spec.artefacts == "final_fp16" else "as trained"
    command = " ".join(["plfw ablate", str(ab.path), *ab.extra, "--out", str(ab.out)])
    lines += ["", f"Command: `{command}`. {compute_text(j.run_dir for j in ab.jobs)} This report "
              f"(scoring what was new): {duration(time.perf_counter() - started)}. Generators "
              f"kept: {len(models)} files, {size:.1f} MB ({kept}).", ""]
    if ab.spec.notes:
        lines += ["## What this comparison can and cannot show", "", ab.spec.notes.strip(), ""]
    if pictures["crops"] is not None:
        lines += ["## Crops", "", f"The most detailed {rep.crop}x{rep.crop} HR window of "
                  f"{len(scores.picks)} images, enlarged {rep.zoom}x (nearest neighbour); "
                  "each run's first finished job.", "", f"![crops]({pictures['crops'].name})",
                  ""]
    if pictures["loss"] is not None:
        lines += ["## Loss curves and balance", "", "Per run, the logged loss terms (unweighted; "
                  "`loss` is the weighted total) and below them how hard each weighted term "
                  "pulls on the SR image: the norm of its gradient with respect to the SR "
                  "batch, logged every `log_every` steps. One line style per seed.", "",
                  f"![loss curves]({pictures['loss'].name})", ""]
    report = out / "report.md"
    atomic_write_bytes(report, "\n".join(lines).encode())
    data = {
        "ablation": str(ab.path), "baseline": ab.spec.baseline, "scale": ab.scale,
        "statistics_method": {"method": stats_mod.METHOD, "confidence": rep.confidence,
                              "correction": "Holm, per metric over the runs (per sweep point "
                              "or matched PSNR level); the primary endpoint is its own family, "
                              "as are the exploratory pairs at matched distortion"},
        "sets": {s: [p.name for p in ps] for s, ps in pairs.items()},
        "duplicates": dup_notes,
        "kept_in_pool": keep,
        # as the ablation gives them (relative to the working directory, like all plfw paths)
        "set_folders": {s: {"hr": ev.hr, "lr": ev.lr, "limit": ev.limit}
                        for s, ev in ab.sets.items()},
        # relative to this report's folder when inside it, so a moved or cloned study still works
        "models": {j.label: _relative(m, out) for j in ab.jobs
                   if (m := finished_model(j)) is not None},
        "metrics": {m.label: {"spec": m.spec, "higher_is_better": m.higher_is_better,
                              "networks": list(m.networks)} for m in metrics},
        "status": status,
        "jobs": {j.label: {"run": j.run, "point": point_label(j.point), "seed": j.seed,
                           "scores": scores.values[j.label]}
                 for j in ab.jobs if j.label in scores.values},
        "references": {name: {"path": str(path), "scores": scores.values.get(name)}
                       for name, path in ab.references.items()},
        "bicubic": scores.values.get(BICUBIC),
        "training": {j.label: {**{k: v for k, v in read_state(j.run_dir).items() if k in (
            "train_seconds", "score_seconds", "sessions")},  # sessions: each one's machine
            "trained_with": sorted(training_networks(j.config, registry))} for j in ab.jobs},
        "primary": prim,
        "main_point": point_label(main_point),
        "statistics": per_point[main_point],
        "statistics_per_point": {point_label(p) or "-": v for p, v in per_point.items()},
        "statistics_per_set": per_set, "matched_distortion": matched, "pairs": pairs_found,
        "learning": settled,
    }
    atomic_write_bytes(out / "report.json", json.dumps(data, indent=1).encode())
    return report

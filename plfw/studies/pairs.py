"""Exploratory: every two runs compared at matched distortion, over the PSNR-Y range they share.

The declared comparisons set each run against the baseline over the range every curve covers
(:func:`plfw.studies.analysis.matched`, the primary endpoint). A baseline whose curve overlaps
no other compares nothing there, yet two other runs may still sit at the same distortion. This
compares each pair on the primary endpoint's metric and set at a few levels of the range the
two share, Holm-corrected over every pair and level: a family chosen once the curves' places
were known, so it is exploratory and the report says so.
"""

from __future__ import annotations

from typing import Any

from plfw.studies import intervals as stats
from plfw.studies.ablation import Ablation
from plfw.studies.analysis import Pool, curves, estimate, holm_into, verdict
from plfw.studies.cells import marked
from plfw.studies.scores import MetricInfo, Scores

UNTESTED = "untested (no interval: a run with one seed)"
NOT_SEPARATED = "not separated at every level"


def pairwise(ab: Ablation, info: MetricInfo, scores: Scores, pool: Pool,
             levels: int = 3) -> dict[str, Any]:
    """Per pair of runs (in the file's order) whose curves overlap: the levels, the metric's
    difference ``a - b`` at each with its interval and Holm p, and a verdict; the pairs
    without a shared range are listed under ``not_compared``."""
    conf = ab.spec.report.confidence
    cs = curves(ab, scores, info.label, pool)
    runs = list(cs)
    pairs: list[dict[str, Any]] = []
    apart: list[list[str]] = []
    for i, a in enumerate(runs):
        for b in runs[i + 1:]:
            lv = stats.common_levels({a: cs[a], b: cs[b]}, levels)
            if not lv:
                apart.append([a, b])
                continue
            pairs.append({"a": a, "b": b, "levels": lv, "difference": [
                estimate(stats.matched_difference(cs[a], cs[b], level, conf), level=level)
                for level in lv]})
    holm_into({f"{k}/{i}": d for k, p in enumerate(pairs) for i, d in enumerate(p["difference"])})
    for p in pairs:
        kinds = {verdict(d, info.higher_is_better, 1 - conf) for d in p["difference"]}
        p["verdict"] = (UNTESTED if any(d["low"] is None for d in p["difference"]) else
                        f"`{p['a']}` better over the shared range" if kinds == {"better"} else
                        f"`{p['b']}` better over the shared range" if kinds == {"worse"} else
                        NOT_SEPARATED)
    return {"metric": info.label, "set": ", ".join(pool.sets),
            "higher_is_better": info.higher_is_better, "pairs": pairs, "not_compared": apart}


def pair_lines(result: dict[str, Any], confidence: float) -> list[str]:
    """The report's table of :func:`pairwise`, labelled exploratory."""
    pairs, count = result["pairs"], sum(len(p["levels"]) for p in result["pairs"])
    lines = [f"**{result['metric']}** ({'higher' if result['higher_is_better'] else 'lower'} is "
             f"better) on {result['set']}, every two runs at up to three PSNR-Y levels of the "
             f"range they share, a − b with its {confidence:.0%} t interval, Holm-corrected "
             f"over all {count} comparison(s) of this table. Exploratory: this family was "
             "added once the curves' places were known.", ""]
    if pairs:
        lines += ["| a − b | shared PSNR-Y | at each level | verdict |", "|---|---|---|---|"]
    better = result["higher_is_better"]
    for p in pairs:
        digits = 2 if p["levels"][-1] - p["levels"][0] > 0.1 else 3  # levels told apart
        at = "<br>".join(f"{d['level']:.{digits}f} dB: {marked(d, better, 1 - confidence)}"
                         for d in p["difference"])
        lines.append(f"| `{p['a']}` − `{p['b']}` | {p['levels'][0]:.{digits}f}-"
                     f"{p['levels'][-1]:.{digits}f} dB | {at} | {p['verdict']} |")
    if result["not_compared"]:
        lines += ["", "No shared PSNR-Y range, so not compared: " + ", ".join(
            f"`{a}` and `{b}`" for a, b in result["not_compared"]) + "."]
    return [*lines, ""]

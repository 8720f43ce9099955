"""Recompute a `plfw ablate` report's intervals from its report.json alone, without plfw.

The study issue asks for the intervals to be recomputed independently: this script reads only the
per-image scores in report.json, rebuilds every (seeds x images) matrix, and recomputes with numpy
and scipy.stats (not plfw.studies.intervals) each run's mean, each difference to the baseline at
every sweep point and per evaluation set, the primary endpoint (at a sweep point or interpolated
at the baseline's PSNR-Y), every two runs at matched distortion (`pairs`) and the
Holm-adjusted p-values. It prints what it checked and the
largest deviation, and exits 1 when any value, bound or p-value differs by more than the
tolerance. The method is the one docs/ablation.md states: seed component per term
(variance of per-seed means / seeds), one image component over the paired images, Welch-
Satterthwaite degrees of freedom, and an interval never narrower than the seed components alone.

    python scripts/check_report.py docs/study/v2/runs/report.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from scipy import stats

TOLERANCE = 1e-6  # relative to max(1, |value|)


def interval(terms: list[tuple[float, np.ndarray]], confidence: float) -> dict[str, float] | None:
    """sum_k w_k mean(x_k) with its two-component t interval; None where there is none."""
    terms = [(w, x) for w, x in terms if w != 0]
    if any(x.shape[0] < 2 for _, x in terms) or terms[0][1].shape[1] < 2:
        return None
    value = sum(w * x.mean() for w, x in terms)
    seed = [(w ** 2 * np.var(x.mean(axis=1), ddof=1) / len(x), len(x) - 1) for w, x in terms]
    combo = sum(w * x.mean(axis=0) for w, x in terms)
    image = (np.var(combo, ddof=1) / len(combo), len(combo) - 1)

    def welch(parts: list[tuple[float, int]]) -> tuple[float, float]:
        total = sum(v for v, _ in parts)
        den = sum(v ** 2 / d for v, d in parts if v > 0)
        return total, (total ** 2 / den if den > 0 else math.inf)

    var, df = welch([*seed, image])
    if var <= 0:
        return {"value": value, "low": value, "high": value, "p": 1.0 if value == 0 else 0.0}
    q = 0.5 + confidence / 2
    half = stats.t.ppf(q, df) * math.sqrt(var)
    p = 2 * stats.t.sf(abs(value) / math.sqrt(var), df)
    seed_var, seed_df = welch(seed)
    if seed_var > 0:
        half = max(half, stats.t.ppf(q, seed_df) * math.sqrt(seed_var))
        p = max(p, 2 * stats.t.sf(abs(value) / math.sqrt(seed_var), seed_df))
    return {"value": value, "low": value - half, "high": value + half, "p": min(p, 1.0)}


def holm(ps: dict[str, float]) -> dict[str, float]:
    ordered = sorted((p, k) for k, p in ps.items() if p is not None)
    m, out, running = len(ps), {}, 0.0
    for rank, (p, k) in enumerate(ordered):
        running = max(running, min(1.0, (m - rank) * p))
        out[k] = running
    return out


class Report:
    def __init__(self, data: dict) -> None:
        self.data = data
        self.sets = list(data["sets"])
        self.confidence = data["statistics_method"]["confidence"]
        self.fixed = {"bicubic": data["bicubic"],
                      **{k: v["scores"] for k, v in data["references"].items()}}

    def matrix(self, run: str, point: str, metric: str, sets: list[str],
               keep: dict[str, list[bool]]) -> np.ndarray | None:
        if run in self.fixed:
            rows = [self.fixed[run]]
        else:
            rows = [j["scores"] for j in self.data["jobs"].values()
                    if j["run"] == run and j["point"] == point]
        rows = [[v for s in sets for v, k in zip(r[s][metric], keep[s], strict=True) if k]
                for r in rows if all(metric in r.get(s, {}) for s in sets)]
        if not rows:
            return None
        x = np.asarray(rows, dtype=float)
        return np.vstack([x, x]) if run in self.fixed else x


def compare(where: str, got: dict, want: dict | None, worst: list[float], bad: list[str],
            keys: tuple[str, ...] = ("value", "low", "high", "p")) -> None:
    if want is None:
        if got.get("low") is not None and got.get("caveat", "") == "":
            bad.append(f"{where}: the report has an interval, the recomputation none")
        return
    for k in keys:
        if got.get(k) is None or k not in want:
            continue
        dev = abs(got[k] - want[k]) / max(1.0, abs(want[k]))
        worst.append(dev)
        if dev > TOLERANCE:
            bad.append(f"{where}.{k}: report {got[k]:.6g}, recomputed {want[k]:.6g}")


def check(data: dict) -> tuple[int, float, list[str]]:
    """(intervals checked, largest relative deviation, mismatches)."""
    rep, worst, bad = Report(data), [], []
    conf, base = rep.confidence, data["baseline"]
    every = {s: data["kept_in_pool"][s] for s in rep.sets}

    def setting(stat: dict, point: str, sets: list[str], keep: dict, where: str) -> None:
        for metric, st in stat.items():
            mats = {r: rep.matrix(r, point, metric, sets, keep) for r in st["mean"]}
            for run, got in st["mean"].items():
                compare(f"{where}.{metric}.mean.{run}", got,
                        interval([(1.0, mats[run])], conf), worst, bad, ("value", "low", "high"))
            want = {run: interval([(1.0, mats[run]), (-1.0, mats[base])], conf)
                    for run in st["difference"]}
            for run, got in st["difference"].items():
                compare(f"{where}.{metric}.difference.{run}", got, want[run], worst, bad)
            adjusted = holm({r: (w or {}).get("p") for r, w in want.items()})
            for run, got in st["difference"].items():
                if got.get("p_holm") is not None and run in adjusted:
                    compare(f"{where}.{metric}.difference.{run}", {"p_holm": got["p_holm"]},
                            {"p_holm": adjusted[run]}, worst, bad, ("p_holm",))

    for point, stat in data["statistics_per_point"].items():
        setting(stat, point, rep.sets, every, f"statistics_per_point[{point}]")
    for s, stat in (data.get("statistics_per_set") or {}).items():
        setting(stat, data["main_point"], [s], {s: [True] * len(data["sets"][s])},
                f"statistics_per_set[{s}]")

    prim = data.get("primary")
    if prim and prim["difference"]:
        sets = [prim["set"]] if prim["set"] in data["sets"] else rep.sets
        keep = ({prim["set"]: [True] * len(data["sets"][prim["set"]])}
                if prim["set"] in data["sets"] else every)
        # the point's name as reports write it: the key's last two parts, several joined by ","
        point = ",".join(f"{'.'.join(k.split('.')[-2:])}="
                         f"{format(v, 'g') if isinstance(v, float) else v}"
                         for k, v in prim["point"].items())
        want = {}
        for run in prim["difference"]:
            if prim["psnr"] is None:
                terms = [(1.0, rep.matrix(run, point, prim["metric"], sets, keep)),
                         (-1.0, rep.matrix(base, point, prim["metric"], sets, keep))]
            else:
                terms = (at_level(rep, run, prim["metric"], sets, keep, prim["psnr"])
                         + [(-w, x) for w, x in at_level(rep, base, prim["metric"], sets, keep,
                                                        prim["psnr"])])
            want[run] = interval(terms, conf)
            compare(f"primary.{run}", prim["difference"][run], want[run], worst, bad)
        adjusted = holm({r: (w or {}).get("p") for r, w in want.items()})
        for run, got in prim["difference"].items():
            if got.get("p_holm") is not None and run in adjusted:
                compare(f"primary.{run}", {"p_holm": got["p_holm"]}, {"p_holm": adjusted[run]},
                        worst, bad, ("p_holm",))
    pairs = data.get("pairs") or {}
    if pairs.get("pairs"):  # every two runs at matched distortion: one Holm family
        one = pairs["set"] in data["sets"]
        sets = [pairs["set"]] if one else rep.sets
        keep = {pairs["set"]: [True] * len(data["sets"][pairs["set"]])} if one else every
        want = {}
        for p in pairs["pairs"]:
            for i, got in enumerate(p["difference"]):
                where = f"pairs.{p['a']}-{p['b']}[{i}]"
                level = p["levels"][i]
                want[where] = interval(
                    at_level(rep, p["a"], pairs["metric"], sets, keep, level)
                    + [(-w, x) for w, x in at_level(rep, p["b"], pairs["metric"], sets, keep,
                                                    level)], conf)
                compare(where, got, want[where], worst, bad)
        adjusted = holm({k: (w or {}).get("p") for k, w in want.items()})
        for p in pairs["pairs"]:
            for i, got in enumerate(p["difference"]):
                where = f"pairs.{p['a']}-{p['b']}[{i}]"
                if got.get("p_holm") is not None:
                    compare(where, {"p_holm": got["p_holm"]}, {"p_holm": adjusted[where]},
                            worst, bad, ("p_holm",))
    return len(worst), max(worst, default=0.0), bad


def at_level(rep: Report, run: str, metric: str, sets: list[str], keep: dict, level: float
             ) -> list[tuple[float, np.ndarray]]:
    """The run's metric linearly interpolated at a PSNR-Y level between its sweep points."""
    points = sorted({j["point"] for j in rep.data["jobs"].values() if j["run"] == run})
    curve = []
    for p in points:
        psnr = rep.matrix(run, p, "psnr_y", sets, keep)
        x = rep.matrix(run, p, metric, sets, keep)
        if psnr is not None and x is not None:
            curve.append((psnr.mean(), x))
    curve.sort(key=lambda c: c[0])
    for (p0, m0), (p1, m1) in zip(curve, curve[1:], strict=False):
        if p0 <= level <= p1:
            t = 0.0 if p1 == p0 else (level - p0) / (p1 - p0)
            return [(1.0 - t, m0), (t, m1)]
    if len(curve) == 1 and curve[0][0] == level:
        return [(1.0, curve[0][1])]
    raise SystemExit(f"{run}: PSNR-Y level {level:.3f} is outside its curve")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="report.json written by plfw ablate")
    args = ap.parse_args()
    try:
        data = json.loads(args.report.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"check_report: cannot read {args.report}: {exc}", file=sys.stderr)
        return 2
    count, worst, bad = check(data)
    print(f"{args.report}: {count} values recomputed independently; largest relative "
          f"deviation {worst:.2e} (tolerance {TOLERANCE:g})")
    for line in bad:
        print("MISMATCH " + line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

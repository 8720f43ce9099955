"""The MOS report: Markdown tables (per method, per data set, per rater, pairwise tests) and a PNG
of the score distributions, written into the study folder. Calibration ratings are left out:
their score was given to the rater. See plfw.mos.stats for the statistics chosen and why."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from plfw.core.errors import UserError
from plfw.mos.db import RatingsDB
from plfw.mos.stats import Summary, holm, rater_consistency, summarize, wilcoxon
from plfw.mos.study import ANCHORS, Study, load_study

PLOT_NAME = "mos_scores.png"


@dataclass(frozen=True)
class Score:
    rater: str
    dataset: str
    image: str
    method: str
    score: int
    elapsed_ms: int | None


def load_scores(study: Study) -> list[Score]:
    """Main-phase ratings joined with the items they rate."""
    if not study.db_path.is_file():
        raise UserError(f"{study.root}: no ratings yet ({study.db_path.name} missing); "
                        f"collect some with `plfw mos serve {study.root}`")
    out = []
    for r in RatingsDB(study.db_path).all():
        item = study.items.get(r.item)
        if item is not None and r.phase == "main":
            out.append(Score(r.rater, item.dataset, item.image, item.method, r.score, r.elapsed_ms))
    return out


_MD_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "\\|"}
_MD_PUNCT = set("\\`*_[]~$!#")


def md(text: str) -> str:
    """User text (rater, method, data-set and study names) made literal in Markdown: HTML
    characters as entities, ``|`` escaped so a table keeps its columns, Markdown's own marks
    backslash-escaped, line breaks and other control characters as spaces."""
    out = []
    for c in str(text):
        if c in _MD_ENTITIES:
            out.append(_MD_ENTITIES[c])
        elif c in _MD_PUNCT:
            out.append("\\" + c)
        elif not c.isprintable():
            out.append(" ")
        else:
            out.append(c)
    return "".join(out)


def _fmt(x: float, digits: int = 2) -> str:
    return "–" if math.isnan(x) else f"{x:.{digits}f}"


def _ci(s: Summary) -> str:
    return "–" if math.isnan(s.low) else f"[{s.low:.2f}, {s.high:.2f}]"


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def write_report(study_dir: str | Path, out: str | Path | None = None,
                 plot: bool = True) -> Path:
    """Write the report (default ``STUDY/report.md``, plot beside it) and return its path."""
    study = load_study(study_dir)
    scores = load_scores(study)
    if not scores:
        raise UserError(f"{study.root}: no ratings yet; collect some with "
                        f"`plfw mos serve {study.root}`")
    out = Path(out) if out is not None else study.root / "report.md"
    methods = [m for m in study.methods if any(s.method == m for s in scores)]
    raters = sorted({s.rater for s in scores})
    lines = [f"# MOS report: {md(study.root.name)}", ""]
    lines += [f"{len(scores)} ratings by {len(raters)} rater(s) of {len(study.images)} image(s) in "
              f"{len(study.datasets)} data set(s), {len(study.methods)} versions each "
              f"(x{study.scale}). Scale: 1 bad, 2 poor, 3 fair, 4 good, 5 excellent. "
              f"`nearest` (nearest-neighbour upscaling) and `original` are the calibration "
              f"anchors (1 and 5); calibration ratings are not counted.", ""]
    lines += _method_table(scores, methods)
    lines += _dataset_table(scores, methods, list(study.datasets))
    lines += _rater_table(scores, raters)
    lines += _pairwise_table(scores, methods)
    if plot:
        _plot(scores, methods, out.parent / PLOT_NAME)
        lines += ["## Score distributions", "", f"![score distributions]({PLOT_NAME})", ""]
    lines += ["## Notes", "",
              "- 95% CI: mean +- t(0.975, n-1) * SD / sqrt(n) over all ratings of a method; it "
              "treats ratings as independent, which understates the uncertainty when few raters "
              "or images are involved.",
              "- Rater consistency: Spearman correlation of a rater's scores with the mean of the "
              "other raters' scores on the same items (leave-one-out).",
              "- Pairwise tests: two-sided Wilcoxon signed-rank test on ratings paired by rater "
              "and image (zero differences dropped; exact up to 60 pairs, normal approximation "
              "above), Holm-corrected over all pairs.", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    return out


def _method_table(scores: list[Score], methods: list[str]) -> list[str]:
    lines = ["## MOS per method", "", "| method | MOS | 95% CI | SD | ratings | raters |",
             "|---|---|---|---|---|---|"]
    for m in methods:
        mine = [s for s in scores if s.method == m]
        s = summarize([x.score for x in mine])
        name = f"{m} (anchor)" if m in ANCHORS else md(m)
        lines.append(f"| {name} | {_fmt(s.mean)} | {_ci(s)} | {_fmt(s.sd)} | {s.n} | "
                     f"{len({x.rater for x in mine})} |")
    return [*lines, ""]


def _dataset_table(scores: list[Score], methods: list[str], datasets: list[str]) -> list[str]:
    lines = ["## MOS per data set", "", "MOS [95% CI] (ratings)", "",
             "| method | " + " | ".join(md(d) for d in datasets) + " |",
             "|---|" + "---|" * len(datasets)]
    for m in methods:
        cells = []
        for d in datasets:
            s = summarize([x.score for x in scores if x.method == m and x.dataset == d])
            cells.append("–" if s.n == 0 else f"{_fmt(s.mean)} {_ci(s)} ({s.n})")
        lines.append(f"| {md(m)} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _rater_table(scores: list[Score], raters: list[str]) -> list[str]:
    by_rater: dict[str, dict[str, float]] = defaultdict(dict)
    for s in scores:
        by_rater[s.rater][f"{s.dataset}/{s.image}/{s.method}"] = s.score
    consistency = rater_consistency(by_rater)
    lines = ["## Rater consistency", "",
             "| rater | ratings | mean score | Spearman rho vs. others | items compared | "
             "median seconds per image |", "|---|---|---|---|---|---|"]
    rhos = []
    for r in raters:
        mine = [s for s in scores if s.rater == r]
        times = sorted(s.elapsed_ms for s in mine if s.elapsed_ms is not None)
        median = _fmt(times[len(times) // 2] / 1000, 1) if times else "–"
        rho, n = consistency[r]
        if not math.isnan(rho):
            rhos.append(rho)
        lines.append(f"| {md(r)} | {len(mine)} | {_fmt(sum(s.score for s in mine) / len(mine))} | "
                     f"{_fmt(rho)} | {n} | {median} |")
    lines += ["", f"Mean rho: {_fmt(sum(rhos) / len(rhos)) if rhos else '– (needs 2+ raters)'}"]
    return [*lines, ""]


def _pairwise_table(scores: list[Score], methods: list[str]) -> list[str]:
    table = {(s.rater, s.dataset, s.image, s.method): s.score for s in scores}
    keys = {(s.rater, s.dataset, s.image) for s in scores}
    rows = []
    for a, b in combinations(methods, 2):
        diffs = [table[(*k, a)] - table[(*k, b)] for k in sorted(keys)
                 if (*k, a) in table and (*k, b) in table]
        if diffs:
            rows.append((a, b, len(diffs), sum(diffs) / len(diffs), wilcoxon(diffs)))
    lines = ["## Pairwise tests", ""]
    if not rows:
        return [*lines, "No pairs of methods were rated on the same image by the same rater.", ""]
    adjusted = holm([r[4].p for r in rows])
    lines += ["| A | B | pairs | pairs that differ | mean A-B | W+ | p | p (Holm) | "
              "different at 5% |", "|---|---|---|---|---|---|---|---|---|"]
    for (a, b, n, mean, test), p_adj in zip(rows, adjusted, strict=True):
        lines.append(f"| {md(a)} | {md(b)} | {n} | {test.n} | {mean:+.2f} | {test.w_plus:g} | "
                     f"{_p(test.p)} | {_p(p_adj)} | {'yes' if p_adj < 0.05 else 'no'} |")
    return [*lines, ""]


def _plot(scores: list[Score], methods: list[str], path: Path) -> None:
    """One histogram of scores 1-5 per method (share of its ratings), MOS marked, side by side."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("the MOS plot needs matplotlib: pip install matplotlib "
                        "(or pass --no-plot)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(methods), figsize=(1.9 * len(methods) + 0.6, 2.6),
                             sharey=True, squeeze=False)
    for ax, m in zip(axes[0], methods, strict=True):
        values = [s.score for s in scores if s.method == m]
        share = [100.0 * values.count(k) / len(values) for k in range(1, 6)]
        ax.bar(range(1, 6), share, color="#4a7ab0", width=0.8)
        mos = sum(values) / len(values)
        ax.axvline(mos, color="#c03030", lw=1.5)
        ax.set_title(f"{m}\nMOS {mos:.2f} (n={len(values)})", fontsize=9)
        ax.set_xticks(range(1, 6))
        ax.set_xlim(0.4, 5.6)
        ax.set_xlabel("score", fontsize=9)
    axes[0][0].set_ylabel("% of ratings")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

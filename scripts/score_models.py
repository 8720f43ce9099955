"""Score bicubic, the previous and the newly trained bundled models: the model card's tables.

    python scripts/score_models.py RUN DATA OUT [--limit N] [--models a,b,...]
                                   [--srresnet FILE] [--srgan FILE] [--sets Set5,Set14]
                                   [--metrics psnr_y,...]

RUN is a run of configs/models/bundled_391*.yaml (its models/srresnet.pt and models/srgan.pt,
unless --srresnet / --srgan name the files, e.g. phases trained in separate runs);
DATA holds benchmarks/Set5 and benchmarks/Set14 (HR and LR_bicubic/X4); ``--sets`` scores other
sets laid out the same way in DATA/benchmarks/ or DATA/ (e.g. BSD100 and Urban100 from
scripts/benchmark_sets.py, sets this project does not ship), or folders of HR images only, whose
LR ``plfw eval`` makes with its MATLAB-compatible bicubic (DATA ``assets``, ``--sets
photos/val``: the shipped photos). Writes OUT/eval.json
(``plfw eval --json`` per model and set, keyed "model/set") and OUT/eval.md: one table per set
and issue 14's targets, each marked met or not from these numbers. Models whose file is missing
(a run not trained yet) are left out of the tables and their targets reported as not measured.
"""

from __future__ import annotations

import argparse
import json
import operator
import subprocess
import sys
from pathlib import Path

METRICS = ["psnr_y", "ssim_y", "st_lpips_alex", "st_lpips_vgg", "haarpsi", "gmsd", "niqe",
           "periodic_db", "periodic_db_rgb", "grid_error"]
#: column heading and decimals of each metric in the tables
COLUMNS = {"psnr_y": ("PSNR-Y ↑", 2), "ssim_y": ("SSIM-Y ↑", 4),
           "st_lpips_alex": ("ST-LPIPS-Alex ↓", 4), "st_lpips_vgg": ("ST-LPIPS-VGG ↓", 4),
           "haarpsi": ("HaarPSI ↑", 4), "gmsd": ("GMSD ↓", 4), "niqe": ("NIQE ↓", 2),
           "periodic_db": ("periodic_db ↓", 2), "periodic_db_rgb": ("periodic_db_rgb ↓", 2),
           "grid_error": ("grid_error ↓", 2)}
SETS = ["Set5", "Set14"]
REPO = Path(__file__).resolve().parents[1]
#: the issue's PSNR-Y floors for the new SRResNet, and the paper's figures for reference
SRRESNET_FLOOR = {"Set5": 31.6, "Set14": 28.0}
#: how much periodic energy above HR's counts as "free of periodic artefacts" (dB); bicubic,
#: which has no sub-pixel grid, scores 0.03 (Set5) and 0.53 (Set14) with this measure
PERIODIC_TOLERANCE_DB = 1.0
#: issue 37: the new SRGAN at least as perceptually strong as plfw 0.1's on Set14, and a GAN,
#: not a collapse: PSNR-Y at most this far below bicubic's (the paper's SRGAN is 0.03 dB above)
SRGAN_LPIPS_ALEX_MAX = 0.165
SRGAN_BELOW_BICUBIC_DB = 0.5


def model_files(run: Path, srresnet: Path | None = None,
                srgan: Path | None = None) -> dict[str, str]:
    return {"bicubic": "bicubic",
            # the study's starting point is the previous bundled SRResNet (the same file)
            "previous_srresnet": str(REPO / "docs" / "study" / "init" / "srresnet_t91.pt"),
            "previous_srgan": str(REPO / "docs" / "models" / "previous" / "srgan_t91.pt"),
            # the SRGAN bundled from 2026-12-04 to the next (issue 14's, de-gridded)
            "srgan_391": str(REPO / "docs" / "models" / "previous" / "srgan_391_degrid.pt"),
            "srresnet": str(srresnet or run / "models" / "srresnet.pt"),
            "srgan": str(srgan or run / "models" / "srgan.pt")}


def score(model: str, data: Path, bench: str, limit: int,
          metrics: list[str] = METRICS) -> dict:
    folder = data / "benchmarks" / bench
    folder = folder if folder.is_dir() else data / bench
    hr, lr = folder / "HR", folder / "LR_bicubic" / "X4"
    # a folder of HR images only (the shipped photos): plfw eval makes the LR itself
    where = ["--hr", str(hr), "--lr", str(lr)] if hr.is_dir() else ["--hr", str(folder)]
    cmd = [sys.executable, "-m", "plfw", "eval", "--model", model, *where,
           "--metrics", ",".join(metrics), "--precision", "fp32", "--limit", str(limit),
           "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"score_models.py: {' '.join(cmd)} failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout)


def tables(results: dict[str, dict]) -> list[str]:
    lines = []
    for bench in dict.fromkeys(key.split("/", 1)[1] for key in results):  # a set may be a path
        rows = {key.split("/", 1)[0]: r for key, r in results.items()
                if key.split("/", 1)[1] == bench}
        shown = [m for m in METRICS if any(m in r for r in rows.values())]
        lines += [f"### {bench}", "", "| model | " + " | ".join(COLUMNS[m][0] for m in shown)
                  + " |", "|---" * (len(shown) + 1) + "|"]
        for name, r in rows.items():  # a metric missing from an older eval.json shows as -
            cells = [f"{r[m]:.{COLUMNS[m][1]}f}" if m in r else "-" for m in shown]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def targets(results: dict[str, dict]) -> list[str]:
    """Issue 14's targets (the SRResNet) and issue 37's (the SRGAN), each ``met`` / ``NOT
    met`` / ``not measured``."""
    def get(model: str, bench: str, metric: str) -> float | None:
        r = results.get(f"{model}/{bench}")  # a metric an older eval.json lacks: not measured
        return None if r is None or metric not in r else float(r[metric])

    passes = {">=": operator.ge, "<": operator.lt, "<=": operator.le}
    checks: list[tuple[str, float | None, str, float | None]] = []
    for bench in SETS:
        checks.append((f"{bench}: SRResNet PSNR-Y", get("srresnet", bench, "psnr_y"), ">=",
                       SRRESNET_FLOOR[bench]))
        for m in ("psnr_y", "st_lpips_alex", "st_lpips_vgg"):
            checks.append((f"{bench}: SRGAN {m} vs SRResNet's", get("srgan", bench, m), "<",
                           get("srresnet", bench, m)))
        # the issue asks it of the SRGAN; the SRResNet's score is in the table
        checks.append((f"{bench}: SRGAN periodic_db", get("srgan", bench, "periodic_db"), "<=",
                       PERIODIC_TOLERANCE_DB))
        # not asked by an issue: no grid hidden in the colours either (see periodic_db_rgb)
        checks.append((f"{bench}: SRGAN periodic_db_rgb", get("srgan", bench, "periodic_db_rgb"),
                       "<=", PERIODIC_TOLERANCE_DB))
    bicubic = get("bicubic", "Set14", "psnr_y")
    checks += [
        ("Set14: SRGAN ST-LPIPS-Alex (issue 37)", get("srgan", "Set14", "st_lpips_alex"), "<=",
         SRGAN_LPIPS_ALEX_MAX),
        ("Set14: SRGAN ST-LPIPS-VGG vs plfw 0.1's SRGAN (issue 37)",
         get("srgan", "Set14", "st_lpips_vgg"), "<=",
         get("previous_srgan", "Set14", "st_lpips_vgg")),
        ("Set14: SRGAN PSNR-Y vs bicubic's - 0.5 dB (issue 37)", get("srgan", "Set14", "psnr_y"),
         ">=", None if bicubic is None else bicubic - SRGAN_BELOW_BICUBIC_DB)]
    lines = ["### Targets (issues 14 and 37)", ""]
    for text, value, op, bound in checks:
        if value is None or bound is None:
            verdict = "not measured"
        else:
            verdict = (f"{'met' if passes[op](value, bound) else 'NOT met'}: "
                       f"{value:.4g} (needs {op} {bound:.4g})")
        lines.append(f"- {text}: {verdict}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--limit", type=int, default=0, help="images per set (0: all)")
    ap.add_argument("--models", default="", help="only these (default: all present)")
    ap.add_argument("--srresnet", type=Path, help="the new SRResNet (default: RUN/models/)")
    ap.add_argument("--srgan", type=Path, help="the new SRGAN (default: RUN/models/)")
    ap.add_argument("--sets", default=",".join(SETS), help="benchmark sets to score")
    ap.add_argument("--metrics", default=",".join(METRICS),
                    help="a subset of the card's metrics (large sets: the cheaper ones)")
    args = ap.parse_args()
    sets = list(filter(None, args.sets.split(",")))
    metrics = list(filter(None, args.metrics.split(",")))
    if unknown := set(metrics) - set(METRICS):
        ap.error(f"--metrics: not among the card's metrics: {', '.join(sorted(unknown))}")
    wanted = set(filter(None, args.models.split(",")))
    results: dict[str, dict] = {}
    for name, model in model_files(args.run, args.srresnet, args.srgan).items():
        if (wanted and name not in wanted) or (model != "bicubic" and not Path(model).is_file()):
            continue
        for bench in sets:
            results[f"{name}/{bench}"] = score(model, args.data, bench, args.limit, metrics)
            print(f"score_models.py: scored {name} on {bench}", file=sys.stderr, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eval.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    checked = targets(results) if set(sets) & set(SETS) else []  # the targets are on Set5/14
    (args.out / "eval.md").write_text("\n".join(tables(results) + checked) + "\n",
                                      encoding="utf-8")
    print(f"score_models.py: wrote {args.out / 'eval.json'} and eval.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

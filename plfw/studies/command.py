"""``plfw ablate``, registered through ``plfw_register_commands`` as any plugin's command is
(entry point ``builtin_studies`` in pyproject.toml). The study code is imported when the command
runs, not when ``plfw`` starts."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import plfw
from plfw.core.registry import Registry

INTERRUPTED = ("plfw: interrupted; finished jobs are kept and the others resume from their "
               "checkpoints when you run the same command again: {again}")


def _run(args: argparse.Namespace, registry: Registry) -> int:
    from plfw.studies.ablate import run_ablation

    run_ablation(args.ablation, registry, args.out, args.overrides, only=args.run or None,
                 report_only=args.report_only, progress=not args.quiet,
                 log=lambda line: print(line, file=sys.stderr, flush=True),
                 eval_hr=args.hr, eval_lr=args.lr, device=args.device,
                 report=not args.no_report, seeds=args.seed, curves_only=args.curves_only,
                 metrics=args.metrics)
    return 0


@plfw.hookimpl
def plfw_register_commands(register: Any) -> None:
    p = register(
        "ablate", _run, help="train config variants (x sweep values x seeds) and write a report",
        description="Train every job of an ablation file (base config + overrides per run, "
                    "over sweep values and seeds), skipping finished jobs and resuming "
                    "interrupted ones, then score all finished jobs on the same images and "
                    "write report.md: the declared primary endpoint first, the "
                    "perception-distortion plane and matched-distortion comparisons, learning "
                    "curves, t intervals with Holm correction, crops, loss and balance curves. "
                    "See docs/ablation.md.")
    p.add_argument("ablation", help="ablation YAML file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides for every run, after the file's own (e.g. to shorten runs)")
    p.add_argument("--out", help="output folder (default: runs/<ablation file stem>)")
    p.add_argument("--run", action="append", metavar="NAME",
                   help="train only this run (repeatable); the report covers all finished runs")
    p.add_argument("--seed", action="append", type=int, metavar="N",
                   help="train only this seed (repeatable): e.g. one process per seed on a GPU")
    p.add_argument("--report-only", action="store_true",
                   help="do not train; score the finished runs and rewrite the report")
    p.add_argument("--no-report", action="store_true",
                   help="train (and score each job as it finishes); write no report")
    p.add_argument("--curves-only", action="store_true",
                   help="train and score nothing; draw the learning and loss curves of the "
                        "jobs so far (finished or running) from their logs")
    p.add_argument("--hr", help="judge on this folder of HR images too (a benchmark set the "
                                "study does not ship): while training, each job is scored on it "
                                "as it finishes; the report on it goes to <out>/report_<set>/ "
                                "(with --report-only, only that report is written)")
    p.add_argument("--metrics", type=lambda text: [m for m in text.split(",") if m],
                   metavar="A,B", help="with --hr: judge that folder with only these of the "
                                       "file's metrics (must keep psnr_y and the primary "
                                       "endpoint's metric), e.g. psnr_y,st_lpips_alex")
    p.add_argument("--lr", help="folder of matching LR images for --hr (default: MATLAB "
                                "bicubic of HR)")
    p.add_argument("--device", help="device for scoring: auto, cpu, cuda (default: the file's "
                                    "eval.device)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(plfw_interrupt_hint=INTERRUPTED)

"""``plfw mos create|serve|report``: the command-line side of MOS studies, registered through
``plfw_register_commands`` as any plugin's command is (entry point ``builtin_mos``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import plfw
from plfw.core.errors import UserError
from plfw.core.registry import Registry


@plfw.hookimpl
def plfw_register_commands(register: Any) -> None:
    """Add ``plfw mos`` (with create/serve/report)."""
    parser = register(
        "mos", run, help="mean-opinion-score studies: create, serve to raters, report",
        description="Mean-opinion-score (MOS) studies, as in the SRGAN paper: raters score SR "
                    "images 1 (bad) to 5 (excellent) in a browser.")
    sub = parser.add_subparsers(dest="mos_command", required=True, metavar="{create,serve,report}")

    create = sub.add_parser("create", help="make a study folder from several methods' outputs")
    create.add_argument("study", type=Path, help="new study folder")
    create.add_argument("--methods", nargs="+", metavar="NAME=DIR",
                        help="each method's output folder (same image names as --reference)")
    create.add_argument("--reference", type=Path, metavar="DIR",
                        help="original (HR) images; subfolders are data sets")
    create.add_argument("--from-ablation", type=Path, metavar="DIR",
                        help="instead of --methods/--reference: rate bicubic and each finished "
                             "run (first seed) of the plfw ablate output folder DIR on its "
                             "evaluation images")
    create.add_argument("--run", action="append", metavar="NAME",
                        help="with --from-ablation: only this run (repeatable)")
    create.add_argument("--scale", type=int, default=4,
                        help="SR factor, for the nearest-neighbour anchor (default 4)")
    create.add_argument("--lr", type=Path, metavar="DIR",
                        help="LR images for the nearest-neighbour anchor (default: bicubic-"
                             "downscale the reference)")
    create.add_argument("--dataset", metavar="NAME",
                        help="data-set label for flat folders, or the one subfolder to use")
    create.add_argument("--calibration", type=int, default=3, metavar="N",
                        help="images whose nearest/original pair is shown first with its anchor "
                             "score (default 3)")
    create.add_argument("--seed", type=int, help="fixes the rating orders (default: random)")

    serve = sub.add_parser("serve", help="run the rating web page")
    serve.add_argument("study", type=Path)
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default loopback only; 0.0.0.0 opens it to "
                            "the network)")
    serve.add_argument("--port", type=int, default=8000, help="default 8000; 0 picks a free one")
    serve.add_argument("--log", action="store_true", help="print every request")
    serve.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                       help="a further host name raters reach the server by (a DNS name, a "
                            "reverse proxy's); requests naming any other Host are refused "
                            "(repeatable)")

    report = sub.add_parser("report", help="MOS tables, tests and plot as Markdown")
    report.add_argument("study", type=Path)
    report.add_argument("--out", type=Path, help="report file (default STUDY/report.md)")
    report.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib)")


def _methods(specs: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise UserError(f"--methods {spec!r}: write NAME=DIR, e.g. bicubic=out/bicubic")
        if name in out:
            raise UserError(f"--methods: method {name!r} given twice")
        out[name] = Path(folder)
    return out


def run(args: argparse.Namespace, registry: Registry) -> int:
    """Carry out a parsed ``plfw mos ...`` command; returns the exit code."""
    if args.mos_command == "create":
        from plfw.mos.create import create_study

        if args.from_ablation is not None:
            if args.methods or args.reference:
                raise UserError("--from-ablation makes the methods and the reference itself; "
                                "drop --methods/--reference")
            from plfw.mos.from_ablation import create_from_ablation

            study = create_from_ablation(args.study, args.from_ablation, registry,
                                         calibration=args.calibration, seed=args.seed,
                                         runs=args.run)
        elif not args.methods or args.reference is None:
            raise UserError("plfw mos create needs --methods NAME=DIR ... and --reference DIR, "
                            "or --from-ablation DIR")
        else:
            study = create_study(args.study, _methods(args.methods), args.reference,
                                 scale=args.scale, lr=args.lr, dataset=args.dataset,
                                 calibration=args.calibration, seed=args.seed)
        print(f"created {study.root}: {len(study.images)} images x {len(study.methods)} versions "
              f"({', '.join(study.methods)}) in data set(s) {', '.join(study.datasets)}; "
              f"{len(study.calibration_items)} calibration items")
        return 0
    if args.mos_command == "serve":
        from plfw.mos.server import serve

        return serve(args.study, host=args.host, port=args.port, log=args.log,
                     allow_hosts=tuple(args.allow_host))
    from plfw.mos.report import write_report

    path = write_report(args.study, out=args.out, plot=not args.no_plot)
    print(f"wrote {path}")
    return 0

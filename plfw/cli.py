"""The ``plfw`` command: its entry point and the core commands.

``main`` loads the plugins once per command (the one place the command line does), builds the
parser from every plugin's ``plfw_register_commands`` (the core's commands below go through the
same :class:`plfw.core.commands.CommandRegister`) and runs the chosen command with that registry.
User mistakes print one line on stderr and exit with code 2."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from plfw import __version__
from plfw.core.commands import CommandRegister
from plfw.core.errors import UserError, format_plfw_warning
from plfw.core.registry import FailedPlugin, Provider, Registry

EXIT_USER_ERROR = 2
_SUFFIX_HELP = "<stem>, <stem>_x4, <stem>_SR, <stem>_out, ..."


def _cmd_train(args: argparse.Namespace, registry: Registry) -> int:
    from plfw.core.config import load_config

    cfg = load_config(args.config, args.overrides)
    args.interrupt_run_dir = cfg.run_dir  # for the hint on Ctrl-C (see _interrupted)
    from plfw.evaluation.evaluate import summary_table  # imports torch: after the config checks
    from plfw.trainer import Trainer

    trainer = Trainer(cfg, registry, resume=args.resume, overwrite=args.overwrite,
                      progress=not args.quiet)
    summary = trainer.fit()
    if summary and trainer.rt.is_main:
        print(summary_table(summary, len(trainer.val_pairs), trainer.metrics))
        print(f"run directory: {trainer.run_dir}")
    return 0


def _cmd_resume(args: argparse.Namespace, registry: Registry) -> int:
    config = Path(args.run_dir) / "config.yaml"
    if not config.is_file():
        raise UserError(f"{args.run_dir}: not a plfw run directory (no config.yaml)")
    args.config, args.resume, args.overwrite = config, True, False
    args.overrides = [f"run_dir={args.run_dir}", *args.overrides]
    return _cmd_train(args, registry)


def _cmd_eval(args: argparse.Namespace, registry: Registry) -> int:
    from plfw.assembly import build_metrics
    from plfw.evaluation.evaluate import (
        evaluate,
        evaluate_sr,
        format_score,
        load_pairs,
        metric_label,
    )

    if (args.model is None) == (args.sr is None):
        raise UserError("give --model (run a model on the LR images) or --sr DIR (score "
                        "existing SR images), not both or neither")
    if args.sr is not None and args.lr is not None:
        raise UserError("--lr is for --model; with --sr the SR images are scored as they are")
    for option, value, low in (("--scale", args.scale, 1), ("--limit", args.limit, 0),
                               ("--border", args.border, 0)):
        if value is not None and value < low:
            raise UserError(f"{option} must be >= {low}, got {value}"
                            + (" (0 = all images)" if option == "--limit" else ""))
    border = args.border if args.border is not None else args.scale
    metrics = build_metrics(registry, args.metrics.split(","), border, "--metrics")
    if not metrics:
        raise UserError("--metrics is empty; e.g. --metrics psnr_y,ssim_y")
    if args.sr is not None:
        result = evaluate_sr(args.sr, args.hr, args.scale, metrics, args.limit, border=border)
        source = {"sr": str(args.sr)}
    else:
        pairs = load_pairs(args.hr, args.lr, args.scale, args.limit)
        result = evaluate(_eval_method(args, registry), pairs, border=border, metrics=metrics)
        source = {"model": str(args.model)}
    result = {**source, "scale": args.scale, "border": border, "metrics": list(metrics),
              "higher_is_better": {k: bool(getattr(m, "higher_is_better", True))
                                   for k, m in metrics.items()}, **result}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        def cell(k: str, value: float) -> str:
            return f"{metric_label(k, metrics[k])} {format_score(metrics[k], value)}"

        for row in result["per_image"]:
            print(f"{row['name']:<24} " + "   ".join(cell(k, row[k]) for k in metrics))
        print(f"{'mean (' + str(result['images']) + ' images)':<24} "
              + "   ".join(cell(k, result[k]) for k in metrics))
    return 0


def _eval_method(args: argparse.Namespace, registry: Registry) -> Any:
    """LR -> SR for ``--model``: MATLAB bicubic, or a generator run on the chosen device;
    averaged over the 8 flips and rotations with ``--self-ensemble``."""
    from plfw.evaluation.evaluate import bicubic
    from plfw.inference.ensemble import self_ensemble

    if args.model == "bicubic":
        method = bicubic(args.scale)
    else:
        from plfw.inference.model import open_model

        model = open_model(args.model, registry, args.device, args.precision)
        if model.scale != args.scale:
            raise UserError(f"{args.model}: the model upscales x{model.scale}, not "
                            f"--scale {args.scale}")
        method = model.image
    return self_ensemble(method) if args.self_ensemble else method


def _cmd_upscale(args: argparse.Namespace, registry: Registry) -> int:
    from plfw.inference.upscale import upscale_files

    failures = upscale_files(args.inputs, args.out, registry, model=args.model, tile=args.tile,
                             overlap=args.overlap, overwrite=args.overwrite, device=args.device,
                             precision=args.precision, progress=not args.quiet,
                             alpha=args.alpha, out_format=args.out_format,
                             quality=args.quality, suffix=args.suffix, json_lines=args.json,
                             self_ensemble=args.self_ensemble)
    return 1 if failures else 0


def _cmd_export(args: argparse.Namespace, registry: Registry) -> int:
    from plfw.inference.export import describe, export_generator

    path = export_generator(args.model, args.format, registry, args.out,
                            overwrite=args.overwrite)
    print(f"wrote {describe(path)}")
    return 0


def _cmd_plugins(args: argparse.Namespace, registry: Registry) -> int:
    from plfw.core.registry import KINDS

    if args.params or args.reference:
        return _params(registry, args)
    rows: list[dict[str, Any]] = []
    for kind in KINDS:
        for name, comp in sorted(registry.components[kind].items()):
            rows.append({"kind": kind, "name": name, "distribution": comp.provider.distribution,
                         "version": comp.provider.version, "plugin": comp.provider.plugin,
                         "description": comp.description})
    for name, p in sorted(args.plfw_owners.items()):
        rows.append({"kind": "command", "name": name, "distribution": p.distribution,
                     "version": p.version, "plugin": p.plugin, "description": ""})
    for (kind, name), providers in sorted(registry.conflicts.items()):
        for p in providers:
            rows.append({"kind": kind, "name": name, "distribution": p.distribution,
                         "version": p.version, "plugin": p.plugin,
                         "error": f"{kind} '{name}' is also registered by another plugin"})
    failed = [{"kind": "failed", "name": f.name, "distribution": f.distribution,
               "version": f.version, "error": f.error} for f in registry.failed]
    if args.json:
        print(json.dumps(rows + failed, indent=2))
        return 0
    width = max([len(r["name"]) for r in rows] + [8])
    for r in rows:
        status = f"  ERROR: {r['error']}" if "error" in r else ""
        print(f"{r['kind']:<18} {r['name']:<{width}} {r['distribution']} {r['version']}{status}")
    for f in failed:
        print(f"FAILED plugin '{f['name']}' from {f['distribution']} {f['version']}: {f['error']}")
    return 0


def _params(registry: Any, args: argparse.Namespace) -> int:
    from plfw.core import params_doc
    if args.reference:
        from plfw.storage.checkpoint import atomic_write_bytes

        target = Path(args.reference)
        atomic_write_bytes(target, params_doc.markdown(registry, "plfw").encode())
        print(f"wrote {target}")
        return 0
    print("\n\n".join(params_doc.text(c) for c in params_doc.find(registry, args.params)))
    return 0


def _add_runtime(p: argparse.ArgumentParser, precision: str = "auto", why: str = "") -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", default=precision, choices=["auto", "fp32", "bf16"],
                   help=f"default {precision}{why}")


def _add_ensemble(p: argparse.ArgumentParser) -> None:
    p.add_argument("--self-ensemble", action="store_true",
                   help="average the model over the 8 flips and rotations (8x the time)")


def core_commands(register: CommandRegister) -> None:
    """train, resume, eval, upscale, export and plugins: registered like any plugin's."""
    p = register("train", _cmd_train, help="train from a YAML config",
                       description="Train from a YAML config; KEY=VALUE pairs override it, e.g. "
                                   "phases.srresnet.steps=100 train.device=cpu.")
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in a run directory that is not empty (its checkpoints, logs "
                        "and models are replaced)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = register("resume", _cmd_resume, help="continue a run from its latest checkpoint",
                       description="Continue the run in RUN_DIR from its latest checkpoint.")
    p.add_argument("run_dir")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--quiet", action="store_true")

    p = register("eval", _cmd_eval, help="score bicubic, a model or a folder of SR images",
                       description="Per-image and mean scores against HR images (PSNR-Y / "
                                   "SSIM-Y by default: BT.601 Y, border = scale), of a model "
                                   "run on the LR images (--model) or of existing SR images "
                                   "(--sr, matched to HR by file stem: " + _SUFFIX_HELP + ").")
    p.add_argument("--model",
                   help="'bicubic', a checkpoint, an exported generator or a bundled model name")
    p.add_argument("--sr", help="folder of SR images to score as they are (instead of --model)")
    p.add_argument("--hr", required=True, help="folder of HR images")
    p.add_argument("--lr", help="folder of LR images (default: MATLAB-compatible bicubic "
                                "downscale of the HR images)")
    p.add_argument("--metrics", default="psnr_y,ssim_y",
                   help="comma-separated metric plugins (default psnr_y,ssim_y; also "
                        "st_lpips_alex, st_lpips_vgg offline, lpips_alex, lpips_vgg, dists; "
                        "see plfw plugins)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--border", type=int, default=None,
                   help="pixels cropped from each side (default: scale)")
    p.add_argument("--limit", type=int, default=0,
                   help="evaluate only the first N images (default 0: all)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_ensemble(p)
    _add_runtime(p, "fp32", ": scores do not depend on whether the CPU has fast bf16")

    p = register("upscale", _cmd_upscale, help="super-resolve images",
                       description="Super-resolve images in overlapping tiles (bounded memory).")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("--model", default="srgan",
                   help="checkpoint, exported generator, .pth / .safetensors weights (plfw, "
                        "ESRGAN, BasicSR, or anything spandrel reads) or bundled model name "
                        "(default: srgan)")
    p.add_argument("--out", default="upscaled", help="output folder (default: ./upscaled)")
    p.add_argument("--tile", type=int, default=384, help="LR tile side (0: whole image)")
    p.add_argument("--overlap", type=int, default=32, help="LR pixels shared by tiles")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (without it they are kept and their inputs "
                        "skipped, exit 0: a rerun finishes what an earlier run left)")
    p.add_argument("--alpha", default="bicubic", choices=["bicubic", "model", "drop"],
                   help="transparency: upscale it by MATLAB bicubic (default) or by the model, "
                        "or drop it (composite on white)")
    p.add_argument("--out-format", default="png", choices=["png", "webp", "jpg"],
                   help="output format (default png; 16-bit inputs stay 16-bit only in png)")
    p.add_argument("--quality", type=int, default=95, help="webp / jpg quality 1..100")
    p.add_argument("--suffix", default=None,
                   help="appended to each output stem (default _x<scale>; '' for bare stems)")
    p.add_argument("--json", action="store_true",
                   help="one JSON record per file on stdout: in, out, size, seconds, error, "
                        "skipped")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_ensemble(p)
    _add_runtime(p)

    p = register("export", _cmd_export, help="write a generator as ONNX or safetensors",
                       description="Export a generator (bundled name, checkpoint, models/"
                                   "<phase>.pt or any loadable .pth / .safetensors) as ONNX "
                                   "([0, 1] RGB in and out, dynamic height and width) or as "
                                   "safetensors with its plfw spec in the metadata.")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--format", required=True, choices=["onnx", "safetensors"])
    p.add_argument("--out", help="output file (default: ./<model stem>.<format>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")

    p = register("plugins", _cmd_plugins, help="list registered components and failed plugins",
                       description="List every registered component with its provider.")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.add_argument("--params", metavar="NAME",
                   help="print one component's parameters with types, defaults and notes "
                        "(KIND:NAME picks one kind, e.g. loss:lpips)")
    p.add_argument("--reference", metavar="FILE",
                   help="write every component's parameters as Markdown (docs/components.md)")


CORE = Provider("core", "plfw", __version__)


def build_parser(plugins: Any) -> argparse.ArgumentParser:
    """The ``plfw`` parser: the core's commands, then every plugin's (in plugin-name order).
    A plugin whose ``plfw_register_commands`` raises is recorded as failed, like one that
    fails to import, and the other commands stay usable."""
    parser = argparse.ArgumentParser(
        prog="plfw", description="Plugin-based perceptual-loss training for super-resolution.")
    parser.add_argument("--version", action="version", version=f"plfw {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register = CommandRegister(sub, CORE)
    core_commands(register)
    hook = plugins.manager.hook.plfw_register_commands
    for impl in sorted(hook.get_hookimpls(), key=lambda i: i.plugin_name):
        provider = plugins.providers[impl.plugin_name]
        own = register.for_provider(provider)
        try:
            impl.function(register=own)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not take plfw down
            error = f"{type(exc).__name__}: {exc}"
            plugins.registry.failed.append(FailedPlugin(
                provider.plugin, provider.distribution, provider.version, error))
            own.disable(error)
    parser.set_defaults(plfw_owners=register.owners)
    return parser


def _interrupted(args: argparse.Namespace, argv: Sequence[str]) -> str:
    """The line printed on Ctrl-C: how to go on. A run with a checkpoint continues with
    ``plfw resume``; one stopped before its first checkpoint starts again (with --overwrite
    once it wrote files). A plugin command gives its own hint through ``plfw_interrupt_hint``
    in its parser's defaults (``{again}`` is the command line that was run)."""
    again = shlex.join(["plfw", *argv])
    command = getattr(args, "command", None)
    run_dir = getattr(args, "interrupt_run_dir", None)
    hint = getattr(args, "plfw_interrupt_hint", None)
    if hint:
        return hint.format(again=again)
    if command not in ("train", "resume") or run_dir is None:
        return "plfw: interrupted"
    folder = Path(run_dir)
    try:
        from plfw.training.rundir import RunDir

        run = RunDir(folder, 1)
        has_checkpoint, wrote = run.ckpt.latest() is not None, bool(run.contents())
    except Exception:  # noqa: BLE001 - a hint must never hide the interrupt itself
        return "plfw: interrupted"
    if has_checkpoint:
        return (f"plfw: interrupted; continue from the last checkpoint with: "
                f"{shlex.join(['plfw', 'resume', str(folder)])}")
    if wrote and command == "train" and "--overwrite" not in argv:
        again = shlex.join(["plfw", *argv, "--overwrite"])
    return f"plfw: interrupted before the first checkpoint; start again with: {again}"


def _note_failed_command(argv: list[str], parser: argparse.ArgumentParser,
                         failed: list[FailedPlugin]) -> None:
    """Before argparse refuses an unknown command: say which plugins failed to load (one of
    them may have provided it)."""
    known = parser.get_default("plfw_owners") or {}
    first = next((a for a in argv if not a.startswith("-")), None)
    if first is not None and first not in known and failed:
        names = ", ".join(f"'{f.name}' ({f.error[:80]})" for f in failed[:3])
        print(f"plfw: note: {len(failed)} plugin(s) failed to load, which may provide "
              f"'{first}': {names}; see plfw plugins", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    from plfw.core.plugins import load_plugins

    warnings.formatwarning = format_plfw_warning  # plfw's notes as one line, no source line
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--version"]:  # answered without loading every plugin (and torch)
        print(f"plfw {__version__}")
        return 0
    plugins = load_plugins()  # once per command; passed down from here, never looked up
    parser = build_parser(plugins)
    _note_failed_command(argv, parser, plugins.registry.failed)
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides may come after options (argparse stops collecting them there)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-")
                                                    for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.plfw_run(args, plugins.registry) or 0)
    except UserError as exc:
        print(f"plfw: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0":  # torchrun: one line, from rank 0
            print(_interrupted(args, argv), file=sys.stderr)
        return 130
    except BrokenPipeError:
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())

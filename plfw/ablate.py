"""``plfw ablate``: train a grid of config variants, score them alike, write one report.

An ablation file names a base config, overrides shared by every run, and per-run overrides.
Each run trains with the ordinary :class:`plfw.trainer.Trainer` in its own directory and can be
interrupted at any point: finished runs are skipped, interrupted ones resume from their latest
checkpoint. Afterwards every run's final generator is scored on the same validation images and
``report.md`` (+ PNGs) compares them.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plfw import config as config_mod
from plfw.config import Config
from plfw.errors import UserError, suggest

STATE_FILE = "ablate.json"
OUT_TOKEN = "{out}"
TOP_KEYS = ("base", "overrides", "runs", "eval", "distance", "report", "notes")
EVAL_KEYS = ("hr", "lr", "scale", "limit")
REPORT_KEYS = ("crop", "zoom")
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: Settings that change how a run executes, not what it learns: they may differ between the
#: invocations that train and resume one run.
RUNTIME_KEYS = {"train": ("device", "threads", "compile", "log_every", "val_every",
                          "checkpoint_every", "keep_last", "sample_images"),
                "data": ("workers",)}

#: Networks the report's perceptual distance may use, in order of preference. A run is scored
#: only with networks its training losses did not use (compared by network name).
DEFAULT_DISTANCE: list[dict[str, Any]] = [
    {"name": "efficientnet_lite0", "weights": "pretrained", "taps": ["1", "2", "3"]},
    {"name": "vgg19", "weights": "caffe", "taps": ["relu2_2", "relu5_4"]},
]


@dataclass
class Ablation:
    """A validated ablation file."""

    path: Path
    base: Path
    overrides: list[str]
    runs: dict[str, list[str]]
    eval_hr: str
    eval_lr: str | None
    scale: int
    limit: int
    distance: list[dict[str, Any]]
    crop: int = 96
    zoom: int = 2
    notes: str = ""
    configs: dict[str, Config] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        return self.path.stem


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"{where}: expected a list of 'key=value' strings, got {value!r}")
    for item in value:
        if "=" not in item:
            raise UserError(f"{where}: '{item}' is not of the form key=value")
    return list(value)


def _mapping(value: Any, keys: tuple[str, ...], where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected a mapping, got {value!r}")
    for key in value:
        if key not in keys:
            raise UserError(f"{where}: unknown key '{key}'{suggest(str(key), keys)}")
    return value


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"{where}: expected a whole number >= 0, got {value!r}")
    return value


def _network_name(spec: Any) -> str | None:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        return spec["name"]
    return None


def training_networks(cfg: Config) -> set[str]:
    """Names of the loss networks any phase of ``cfg`` trains against."""
    names: set[str] = set()
    for phase in cfg.phases.values():
        for spec in (phase.losses or {}).values():
            if isinstance(spec, dict) and ("network" in spec or spec.get("name") == "perceptual"):
                name = _network_name(spec.get("network", "vgg19"))  # the loss's default
                if name:
                    names.add(name)
    return names


def _run_config(ab: Ablation, name: str, out: Path) -> Config:
    data = config_mod.read_config_file(ab.base)
    for item in [*ab.overrides, *ab.runs[name]]:
        item = item.replace(OUT_TOKEN, str(out))
        try:
            config_mod.apply_override(data, item)
        except UserError as exc:
            raise UserError(f"{ab.path}: run '{name}': {exc}") from None
    data["run_dir"] = str(out / name)
    data["name"] = name
    try:
        return config_mod.build_config(data, name=name)
    except UserError as exc:
        raise UserError(f"{ab.path}: run '{name}': {exc}") from None


def load_ablation(path: str | Path, out: Path | None = None,
                  extra: list[str] | None = None) -> tuple[Ablation, Path]:
    """Read and check an ablation file, building every run's config (so a typo in the last
    run fails before the first one trains). ``extra`` overrides go after the file's common
    ones. Returns the ablation and its output folder."""
    path = Path(path)
    data = config_mod._read_yaml(path)
    for key in data:
        if key not in TOP_KEYS:
            raise UserError(f"{path}: unknown key '{key}'{suggest(str(key), TOP_KEYS)}")
    if not isinstance(data.get("base"), str):
        raise UserError(f"{path}: 'base' is missing: give the base config, relative to this file")
    base = (path.parent / data["base"]).resolve()
    if not base.is_file():
        raise UserError(f"{path}: base config not found: {base}")
    runs = data.get("runs")
    if not isinstance(runs, dict) or not runs:
        raise UserError(f"{path}: 'runs' must map run names to lists of overrides, e.g. "
                        "runs: {mse: []}")
    checked: dict[str, list[str]] = {}
    for name, items in runs.items():
        if not isinstance(name, str) or not RUN_NAME.match(name):
            raise UserError(f"{path}: run name {name!r} must be letters, digits, '_', '.', '-'")
        checked[name] = _strings(items, f"{path}: runs.{name}")
    base_cfg = config_mod.load_config(base)
    ev = _mapping(data.get("eval"), EVAL_KEYS, f"{path}: eval")
    hr = ev.get("hr")
    if hr is None:
        val = base_cfg.data.val
        hr = val.get("root") if isinstance(val, dict) else None
        if hr is None:
            raise UserError(f"{path}: eval.hr is missing and the base config has no data.val "
                            "root; set eval: {hr: path/to/HR}")
    distance = data.get("distance", DEFAULT_DISTANCE)
    if (not isinstance(distance, list) or not distance
            or any(_network_name(d) is None for d in distance)):
        raise UserError(f"{path}: distance must be a list of feature extractor specs, e.g. "
                        "[{name: vgg19, weights: caffe, taps: [relu2_2]}]")
    rep = _mapping(data.get("report"), REPORT_KEYS, f"{path}: report")
    if ev.get("scale", base_cfg.scale) not in (2, 3, 4, 8):
        raise UserError(f"{path}: eval.scale must be 2, 3, 4 or 8, got {ev['scale']!r}")
    common = [*_strings(data.get("overrides"), f"{path}: overrides"),
              *_strings(list(extra or []), "command line")]
    ab = Ablation(path=path, base=base, overrides=common,
                  runs=checked, eval_hr=str(hr), eval_lr=ev.get("lr"),
                  scale=int(ev.get("scale", base_cfg.scale)),
                  limit=_positive_int(ev.get("limit", 0), f"{path}: eval.limit"),
                  distance=[dict(d) if isinstance(d, dict) else {"name": d} for d in distance],
                  crop=max(1, _positive_int(rep.get("crop", 96), f"{path}: report.crop")),
                  zoom=max(1, _positive_int(rep.get("zoom", 2), f"{path}: report.zoom")),
                  notes=str(data.get("notes") or ""))
    out = Path(out) if out is not None else Path("runs") / ab.stem
    ab.configs = {name: _run_config(ab, name, out) for name in ab.runs}
    return ab, out


# ------------------------------------------------------------------------- training
def _read_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / STATE_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _write_state(run_dir: Path, state: dict[str, Any]) -> None:
    from plfw.checkpoint import atomic_write_bytes

    atomic_write_bytes(run_dir / STATE_FILE, json.dumps(state, indent=2).encode())


def _learned(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that decides what a run learns."""
    out = dict(config)
    for section, keys in RUNTIME_KEYS.items():
        if isinstance(out.get(section), dict):
            out[section] = {k: v for k, v in out[section].items() if k not in keys}
    return out


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt  # so the elapsed time is saved on `kill` as on Ctrl-C


def train_run(ab: Ablation, name: str, log: Any = print, progress: bool = False) -> str:
    """Train one run unless it finished; resume it when it has a checkpoint.

    Returns what happened: ``"skipped"``, ``"resumed"`` or ``"trained"``. The wall time spent
    training is added to ``ablate.json`` in the run directory even when interrupted."""
    from plfw.trainer import Trainer

    cfg = ab.configs[name]
    run_dir = Path(cfg.run_dir)
    state = _read_state(run_dir)
    resolved = json.loads(json.dumps(config_mod.to_dict(cfg)))
    if _learned(state.get("config", resolved)) != _learned(resolved):
        raise UserError(f"{run_dir}: the config of run '{name}' changed since it was trained; "
                        f"delete that folder to retrain it, or rename the run")
    if state.get("finished"):
        log(f"plfw ablate: {name}: finished earlier, skipped")
        return "skipped"
    from plfw.checkpoint import CheckpointDir

    resume = CheckpointDir(run_dir / "checkpoints", cfg.train.keep_last).latest() is not None
    if not resume:
        state = {}
    state.update(overrides=[*ab.overrides, *ab.runs[name]], config=resolved, finished=False)
    state.setdefault("train_seconds", 0.0)
    log(f"plfw ablate: {name}: {'resuming' if resume else 'training'} in {run_dir}")
    started = time.perf_counter()
    try:
        trainer = Trainer(cfg, resume=resume, overwrite=not resume, progress=progress)
        trainer.fit()
        state["finished"] = True
    finally:
        state["train_seconds"] += time.perf_counter() - started
        if run_dir.is_dir():
            _write_state(run_dir, state)
    return "resumed" if resume else "trained"


def final_model(cfg: Config) -> Path | None:
    """The exported generator of the run's last phase that trained."""
    for name in reversed(list(cfg.phases)):
        path = Path(cfg.run_dir) / "models" / f"{name}.pt"
        if cfg.phases[name].steps > 0 and path.is_file():
            return path
    return None


# ------------------------------------------------------------------------- command
def run_ablation(path: str | Path, out: str | Path | None = None,
                 overrides: list[str] | None = None, device: str = "auto",
                 only: list[str] | None = None, report_only: bool = False,
                 progress: bool = False, log: Any = print, eval_hr: str | None = None,
                 eval_lr: str | None = None) -> Path:
    """Train (or skip/resume) every run, then evaluate them and write the report.
    ``eval_hr`` / ``eval_lr`` replace the file's ``eval.hr`` / ``eval.lr``."""
    from plfw.ablate_report import write_report

    ab, out_dir = load_ablation(path, Path(out) if out is not None else None, overrides)
    if eval_hr:
        ab.eval_hr, ab.eval_lr = eval_hr, eval_lr
    elif eval_lr:
        ab.eval_lr = eval_lr
    names = list(ab.runs)
    if only:
        unknown = [n for n in only if n not in ab.runs]
        if unknown:
            raise UserError(f"--run {unknown[0]}: no such run in {ab.path}"
                            f"{suggest(unknown[0], names)}")
        names = [n for n in names if n in only]
    if not report_only:
        previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            for name in names:
                train_run(ab, name, log=log, progress=progress)
        finally:
            signal.signal(signal.SIGTERM, previous)
    report = write_report(ab, out_dir, device=device, log=log)
    log(f"plfw ablate: report written to {report}")
    return report


def _cmd_ablate(args: argparse.Namespace) -> int:
    run_ablation(args.ablation, args.out, args.overrides, device=args.device, only=args.run or None,
                 report_only=args.report_only, progress=not args.quiet,
                 log=lambda line: print(line, file=sys.stderr, flush=True),
                 eval_hr=args.hr, eval_lr=args.lr)
    return 0


def add_parser(sub: Any) -> None:
    """Register ``plfw ablate`` with the main CLI."""
    p = sub.add_parser(
        "ablate", help="train config variants and write a comparison report",
        description="Train every run of an ablation file (base config + overrides), skipping "
                    "finished runs and resuming interrupted ones, then score all runs on the "
                    "same validation images and write report.md with PNGs. See docs/ablation.md.")
    p.add_argument("ablation", help="ablation YAML file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides for every run, after the file's own (e.g. to shorten runs)")
    p.add_argument("--out", help="output folder (default: runs/<ablation file stem>)")
    p.add_argument("--run", action="append", metavar="NAME",
                   help="train only this run (repeatable); the report covers all finished runs")
    p.add_argument("--report-only", action="store_true",
                   help="do not train; rewrite the report from the runs that exist")
    p.add_argument("--hr", help="folder of validation HR images (replaces eval.hr; then eval.lr "
                                "is ignored unless --lr is given)")
    p.add_argument("--lr", help="folder of matching LR images (replaces eval.lr)")
    p.add_argument("--device", default="auto", help="device for the evaluation: auto, cpu, cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_ablate)

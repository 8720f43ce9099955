"""The ablation file: a base config, shared overrides, named runs, seeds, and how to score them.

An ablation file is YAML validated against :class:`AblationFile` with the same dataclass
machinery as run configs. Each (run, seed) becomes one ordinary training config, a *job*, with
its own run directory: ``<out>/<run>`` without ``seeds``, ``<out>/<run>/seed<N>`` with them.
Overrides may use ``{out}`` (the ablation's output folder) and ``{seed}``. An ablation file may
``extends:`` another (mappings merge, lists and values replace; ``base`` and relative paths are
read relative to the file that is loaded), e.g. the GPU-sized variant of a study.
Running the jobs lives in :mod:`plfw.studies.ablate`, scoring and the report in
:mod:`plfw.studies.report`.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from plfw.core import config as config_mod
from plfw.core.config import DEFAULT_METRICS, Config, ImageSet
from plfw.core.config_files import read_config_file
from plfw.core.errors import UserError, suggest
from plfw.core.registry import split_spec

OUT_TOKEN = "{out}"
SEED_TOKEN = "{seed}"
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SET_NAME = RUN_NAME
STATE_FILE = "ablate.json"  # in each job's run directory: its config, finished flag, time


@dataclass
class CurveSpec:
    """Learning curves inside every job: score the generator at these global steps."""

    at: list[int] = field(default_factory=list)
    metrics: list[Any] = field(default_factory=lambda: ["psnr_y"])  # a cheaper subset, say
    sets: list[str] | None = None  # names of eval sets (default: all of them)
    limit: int = 0  # at most this many images per set for curves (0: the set's own limit)


@dataclass
class ImageSettings:
    hr: str | None = None  # shorthand for sets: {<folder name>: {hr: ..., lr: ...}}
    lr: str | None = None
    limit: int = 0
    scale: int | None = None  # defaults to the base config's scale
    sets: dict[str, ImageSet] = field(default_factory=dict)
    device: str = "auto"
    curve: CurveSpec = field(default_factory=CurveSpec)
    # fixed models scored beside bicubic, e.g. {start: the generator every run starts from}
    references: dict[str, str] = field(default_factory=dict)


@dataclass
class ExtraSeeds:
    """More seeds at some sweep points, e.g. 3 at the paper's weight and 2 elsewhere."""

    at: dict[str, Any] = MISSING  # sweep key -> value
    seeds: list[int] = MISSING


@dataclass
class Primary:
    """The one comparison declared before training; everything else is exploratory."""

    metric: str = MISSING  # a metric label of the ablation
    set: str | None = None  # an eval set (default: all sets pooled)
    psnr: float | None = None  # matched PSNR-Y level [dB]; null: at `point`
    point: dict[str, Any] = field(default_factory=dict)  # sweep key -> value (single setting)
    # true: at the PSNR-Y the baseline reaches at `point` (its mean over seeds and images),
    # every other run interpolated there: "at the baseline's distortion", no level guessed
    at_baseline_psnr: bool = False


@dataclass
class ReportSettings:
    crop: int = 96  # side of the HR window shown in crop grids
    zoom: int = 2
    crop_images: int = 6  # images with a crop grid (spread over the sets); 0 = none
    # eval sets the crops come from (default: all); leave out sets whose images may not be
    # redistributed when the report is committed or published
    crop_sets: list[str] | None = None
    bootstrap: int = 10000  # unused since t intervals replaced the bootstrap; older files load
    confidence: float = 0.95


@dataclass
class AblationFile:
    base: str = MISSING  # the base config, relative to the ablation file
    overrides: list[str] = field(default_factory=list)  # for every run, before its own
    runs: dict[str, list[str]] = MISSING  # run name -> its overrides
    # config key -> values: every run at every value (every combination of several keys)
    sweep: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] | None = None  # repeat every run once per seed (sets `seed`)
    extra_seeds: list[ExtraSeeds] = field(default_factory=list)
    baseline: str | None = None  # the run every other run is compared with
    primary: Primary | None = None
    # what a finished job keeps: all (checkpoints, every phase's .pt) or final_fp16 (only the
    # last phase's generator, as fp16 safetensors: half the bytes of a committed study)
    artefacts: str = "all"
    metrics: list[Any] = field(default_factory=lambda: list(DEFAULT_METRICS))
    eval: ImageSettings = field(default_factory=ImageSettings)
    report: ReportSettings = field(default_factory=ReportSettings)
    notes: str = ""  # limits of the comparison, printed in the report


Point = tuple[tuple[str, Any], ...]  # one sweep setting: ((key, value), ...) in sweep order


def point_label(point: Point) -> str:
    """``adversarial.weight=0.001`` (the key's last two parts), several joined by ``,``: the
    name of a sweep point in reports and its folder name."""
    return ",".join(f"{'.'.join(k.split('.')[-2:])}={_value_text(v)}" for k, v in point)


def _value_text(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


@dataclass
class Job:
    """One training run of the ablation: a run name, a sweep point, a seed and its config."""

    run: str
    seed: int | None
    config: Config
    point: Point = ()

    @property
    def arm(self) -> str:
        """The run at its sweep point: what seeds repeat."""
        return self.run if not self.point else f"{self.run}[{point_label(self.point)}]"

    @property
    def label(self) -> str:
        return self.arm if self.seed is None else f"{self.arm}/seed{self.seed}"

    @property
    def run_dir(self) -> Path:
        return Path(self.config.run_dir)


@dataclass
class Ablation:
    """A validated ablation file with every job's config built."""

    path: Path
    spec: AblationFile
    base: Path
    out: Path
    extra: list[str]
    scale: int
    sets: dict[str, ImageSet]
    jobs: list[Job] = field(default_factory=list)

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def runs(self) -> dict[str, list[str]]:
        return self.spec.runs

    @property
    def overrides(self) -> list[str]:
        return [*self.spec.overrides, *self.extra]

    @property
    def points(self) -> list[Point]:
        """Every sweep point (one empty point without a sweep)."""
        keys = list(self.spec.sweep)
        return [tuple(zip(keys, values, strict=True))
                for values in itertools.product(*self.spec.sweep.values())]

    @property
    def arms(self) -> dict[str, tuple[str, Point]]:
        """Arm label -> (run, point), runs in file order, each over the sweep points."""
        return {Job(run, None, None, p).arm: (run, p)  # type: ignore[arg-type]
                for run in self.runs for p in self.points}

    @property
    def references(self) -> dict[str, Path]:
        """Reference models by name (paths relative to the working directory)."""
        return {k: Path(v) for k, v in self.spec.eval.references.items()}

    def jobs_of(self, arm: str) -> list[Job]:
        """The jobs (seeds) of an arm label, or of a run name (all its points)."""
        return [j for j in self.jobs if j.arm == arm or (j.run == arm and not j.point)]

    def judged_on(self, hr: str, lr: str | None = None,
                  metrics: list[str] | None = None) -> Ablation:
        """The same jobs judged on one other folder (``--hr`` / ``--lr``) instead of the file's
        sets, with only ``metrics`` of the file's if given (a cheaper check, which still needs
        PSNR-Y, the distortion axis, and the primary metric). A primary endpoint declared on
        one of the file's sets is judged on that folder."""
        other = dataclasses.replace(self, spec=copy.deepcopy(self.spec),
                                    sets={set_name(hr): ImageSet(hr=hr, lr=lr)})
        if other.spec.primary is not None and other.spec.primary.set is not None:
            other.spec.primary.set = next(iter(other.sets))
        if metrics:
            other._keep_metrics(metrics)
        return other

    def _keep_metrics(self, names: list[str]) -> None:
        labels = [split_spec(m, "metrics")[0] for m in self.spec.metrics]
        for name in names:
            if name not in labels:
                raise UserError(f"--metrics: '{name}' is not one of the file's metrics "
                                f"({', '.join(labels)}){suggest(name, labels)}")
        primary = self.spec.primary.metric if self.spec.primary else None
        if "psnr_y" not in names or (primary and primary not in names):
            raise UserError("--metrics must keep psnr_y"
                            + (f" and the primary endpoint's {primary}" if primary else ""))
        self.spec.metrics = [m for m, label in zip(self.spec.metrics, labels, strict=True)
                             if label in names]


def set_name(folder: str) -> str:
    """A single evaluation folder's set name: the folder's name (its parent's for a benchmark
    layout's ``<set>/HR``), or 'images' if unusable."""
    path = Path(folder).resolve()
    name = path.parent.name if path.name == "HR" else path.name
    return name if SET_NAME.match(name) else "images"


def _check_overrides(items: list[str], where: str) -> None:
    for item in items:
        if "=" not in item:
            raise UserError(f"{where}: '{item}' is not of the form key=value")


def job_overrides(ab: Ablation, run: str, point: Point = ()) -> list[str]:
    """The overrides of one job, in order: shared, the sweep point, the run's, the command
    line's (which has the last word)."""
    swept = [f"{k}={json.dumps(v)}" for k, v in point]
    return [*ab.spec.overrides, *swept, *ab.runs[run], *ab.extra]


def _job_config(ab: Ablation, run: str, seed: int | None, point: Point = ()) -> Config:
    data = read_config_file(ab.base)
    items = job_overrides(ab, run, point)
    for item in items:
        item = item.replace(OUT_TOKEN, str(ab.out))
        item = item.replace(SEED_TOKEN, str(seed if seed is not None else data.get("seed", 0)))
        try:
            config_mod.apply_override(data, item)
        except UserError as exc:
            raise UserError(f"{ab.path}: run '{run}': {exc}") from None
    if seed is not None:
        data["seed"] = seed
    folder = ab.out / run
    if point:
        folder = folder / point_label(point)
    if seed is not None:
        folder = folder / f"seed{seed}"
    data["run_dir"] = str(folder)
    curve = ab.spec.eval.curve
    if curve.at:
        names = curve.sets if curve.sets is not None else list(ab.sets)
        data["curve"] = {"at": list(curve.at), "metrics": list(curve.metrics),
                         "sets": {n: {"hr": ab.sets[n].hr, "lr": ab.sets[n].lr,
                                      "limit": curve.limit or ab.sets[n].limit} for n in names}}
    data["name"] = run
    try:
        return config_mod.build_config(data, name=run)
    except UserError as exc:
        raise UserError(f"{ab.path}: run '{run}': {exc}") from None


def _eval_sets(path: Path, ev: ImageSettings, base_cfg: Config) -> dict[str, ImageSet]:
    sets = dict(ev.sets)
    if ev.hr is not None:
        if sets:
            raise UserError(f"{path}: eval: give either hr/lr or sets, not both")
        sets = {set_name(ev.hr): ImageSet(ev.hr, ev.lr, ev.limit)}
    if not sets:
        val = base_cfg.data.val
        root = val.get("root") if isinstance(val, dict) else None
        if root is None:
            raise UserError(f"{path}: eval has no images and the base config has no data.val "
                            "root; set eval: {hr: path/to/HR} or eval: {sets: {...}}")
        sets = {"val": ImageSet(hr=str(root), limit=ev.limit)}
    for name in sets:
        if not SET_NAME.match(name):
            raise UserError(f"{path}: eval set name {name!r} must be letters, digits, '_', "
                            "'.', '-'")
    return sets


def load_ablation(path: str | Path, out: Path | None = None,
                  extra: list[str] | None = None) -> Ablation:
    """Read and check an ablation file, building every job's config (so a typo in the last
    run fails before the first one trains). ``extra`` overrides go after the file's own."""
    path = Path(path)
    data = read_config_file(path)
    if isinstance(data.get("runs"), dict):  # `name:` with nothing after it means no overrides
        data["runs"] = {k: ([] if v is None else v) for k, v in data["runs"].items()}
    if isinstance(data.get("runs"), dict):
        for name, items in data["runs"].items():
            if not isinstance(items, list):
                raise UserError(f"{path}: runs.{name}: expected a list of 'key=value' strings, "
                                f"got {items!r}")
    try:
        spec = config_mod.parse_typed(data, AblationFile, str(path))
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    base = (path.parent / spec.base).resolve()
    if not base.is_file():
        raise UserError(f"{path}: base config not found: {base}")
    if not spec.runs:
        raise UserError(f"{path}: 'runs' must map run names to lists of overrides, e.g. "
                        "runs: {mse: []}")
    for name, items in spec.runs.items():
        if not RUN_NAME.match(name):
            raise UserError(f"{path}: run name {name!r} must be letters, digits, '_', '.', '-'")
        if name.lower() in ("bicubic", "hr") or name in spec.eval.references:
            raise UserError(f"{path}: run name '{name}' is taken by the report (bicubic, HR "
                            "and eval.references are shown beside the runs); rename the run")
        _check_overrides(items, f"{path}: runs.{name}")
    _check_overrides(spec.overrides, f"{path}: overrides")
    _check_overrides(list(extra or []), "command line")
    if spec.baseline is not None and spec.baseline not in spec.runs:
        raise UserError(f"{path}: baseline '{spec.baseline}' is not one of the runs"
                        f"{suggest(spec.baseline, spec.runs)}")
    if spec.seeds is not None and (not spec.seeds or len(set(spec.seeds)) != len(spec.seeds)
                                   or any(s < 0 for s in spec.seeds)):
        raise UserError(f"{path}: seeds must be a non-empty list of distinct whole numbers >= 0, "
                        f"got {spec.seeds}")
    if spec.artefacts not in ("all", "final_fp16"):
        raise UserError(f"{path}: artefacts must be all or final_fp16, got {spec.artefacts!r}")
    if not spec.metrics:
        raise UserError(f"{path}: metrics: give at least one metric, e.g. [psnr_y]")
    rep = spec.report
    if rep.crop < 1 or rep.zoom < 1 or rep.bootstrap < 100 or not 0.5 < rep.confidence < 1:
        raise UserError(f"{path}: report: crop and zoom must be >= 1, bootstrap >= 100 and "
                        f"0.5 < confidence < 1")
    base_cfg = config_mod.load_config(base)
    scale = spec.eval.scale or base_cfg.scale
    if scale not in (2, 3, 4, 8):
        raise UserError(f"{path}: eval.scale must be 2, 3, 4 or 8, got {scale!r}")
    out_dir = Path(out) if out is not None else Path("runs") / path.stem
    ab = Ablation(path=path, spec=spec, base=base, out=out_dir, extra=list(extra or []),
                  scale=scale, sets=_eval_sets(path, spec.eval, base_cfg))
    _check_sweep(path, spec, ab)
    seeds: list[int | None] = list(spec.seeds) if spec.seeds is not None else [None]
    # Seed-major order: every arm once before any arm twice, so an interrupted study has
    # every arm at its first seeds rather than some arms at all seeds; extra seeds come last.
    order = [(seed, p) for seed in seeds for p in ab.points]
    for extra_seeds in spec.extra_seeds:
        at = tuple((k, extra_seeds.at[k]) for k in spec.sweep)
        order += [(seed, at) for seed in extra_seeds.seeds if (seed, at) not in order]
    ab.jobs = [Job(run, seed, _job_config(ab, run, seed, p), p)
               for seed, p in order for run in spec.runs]
    return ab


def _check_sweep(path: Path, spec: AblationFile, ab: Ablation) -> None:
    """Sweep values, extra seeds, the primary endpoint and curve sets name real things."""
    for key, values in spec.sweep.items():
        if not isinstance(values, list) or not values or len(set(map(str, values))) != len(values):
            raise UserError(f"{path}: sweep.{key}: give a list of distinct values, e.g. "
                            f"[3.0e-4, 1.0e-3, 3.0e-3]")
        _check_overrides([f"{key}=x"], f"{path}: sweep")
    for i, extra in enumerate(spec.extra_seeds):
        where = f"{path}: extra_seeds[{i}]"
        if set(extra.at) != set(spec.sweep):
            raise UserError(f"{where}.at must give a value for every sweep key "
                            f"({', '.join(spec.sweep) or 'there is no sweep'})")
        for key, value in extra.at.items():
            if value not in spec.sweep[key]:
                raise UserError(f"{where}.at: {value!r} is not one of sweep.{key}'s values")
        if spec.seeds is None or not extra.seeds or any(s < 0 for s in extra.seeds):
            raise UserError(f"{where}: needs `seeds:` at the top level and non-negative seeds")
    curve = spec.eval.curve
    for name in curve.sets or []:
        if name not in ab.sets:
            raise UserError(f"{path}: eval.curve.sets: no eval set '{name}'"
                            f"{suggest(name, ab.sets)}")
    for name in spec.report.crop_sets or []:
        if name not in ab.sets:
            raise UserError(f"{path}: report.crop_sets: no eval set '{name}'"
                            f"{suggest(name, ab.sets)}")
    if curve.at and (any(s < 1 for s in curve.at) or len(set(curve.at)) != len(curve.at)):
        raise UserError(f"{path}: eval.curve.at: expected distinct steps >= 1, got {curve.at}")
    primary = spec.primary
    if primary is not None:
        labels = [m if isinstance(m, str) else m.get("name") for m in spec.metrics]
        if primary.metric not in labels:
            raise UserError(f"{path}: primary.metric '{primary.metric}' is not one of the "
                            f"metrics{suggest(primary.metric, labels)}")
        if primary.set is not None and primary.set not in ab.sets:
            raise UserError(f"{path}: primary.set: no eval set '{primary.set}'"
                            f"{suggest(primary.set, ab.sets)}")
        if spec.baseline is None:
            raise UserError(f"{path}: a primary endpoint compares with the baseline: set "
                            "`baseline:`")
        if primary.psnr is None and set(primary.point) != set(spec.sweep):
            raise UserError(f"{path}: primary: give `psnr:` (a matched PSNR-Y level) or a "
                            f"`point:` with a value for every sweep key")
        if primary.at_baseline_psnr and (primary.psnr is not None or not spec.sweep):
            raise UserError(f"{path}: primary.at_baseline_psnr takes its level from the "
                            f"baseline at `point:` in a sweep: drop `psnr:`"
                            + ("" if spec.sweep else " and add a sweep"))

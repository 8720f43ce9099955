"""The ablation file: a base config, shared overrides, named runs, seeds, and how to score them.

An ablation file is YAML validated against :class:`AblationFile` with the same dataclass
machinery as run configs. Each (run, seed) becomes one ordinary training config, a *job*, with
its own run directory: ``<out>/<run>`` without ``seeds``, ``<out>/<run>/seed<N>`` with them.
Overrides may use ``{out}`` (the ablation's output folder) and ``{seed}``. An ablation file may
``extends:`` another (mappings merge, lists and values replace; ``base`` and relative paths are
read relative to the file that is loaded), e.g. the GPU-sized variant of a study.
Running the jobs lives in :mod:`plfw.ablate`, scoring and the report in :mod:`plfw.ablate_report`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from plfw import config as config_mod
from plfw.config import Config
from plfw.errors import UserError, suggest

OUT_TOKEN = "{out}"
SEED_TOKEN = "{seed}"
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SET_NAME = RUN_NAME
STATE_FILE = "ablate.json"  # in each job's run directory: its config, finished flag, time


@dataclass
class EvalSet:
    """One folder of validation images (LR made by MATLAB bicubic when ``lr`` is not given)."""

    hr: str = MISSING
    lr: str | None = None
    limit: int = 0  # at most this many images (sorted by name); 0 = all


@dataclass
class EvalSettings:
    hr: str | None = None  # shorthand for sets: {<folder name>: {hr: ..., lr: ...}}
    lr: str | None = None
    limit: int = 0
    scale: int | None = None  # defaults to the base config's scale
    sets: dict[str, EvalSet] = field(default_factory=dict)
    device: str = "auto"


@dataclass
class ReportSettings:
    crop: int = 96  # side of the HR window shown in crop grids
    zoom: int = 2
    crop_images: int = 6  # images with a crop grid (spread over the sets); 0 = none
    bootstrap: int = 10000  # resamples for every interval
    confidence: float = 0.95


@dataclass
class AblationFile:
    base: str = MISSING  # the base config, relative to the ablation file
    overrides: list[str] = field(default_factory=list)  # for every run, before its own
    runs: dict[str, list[str]] = MISSING  # run name -> its overrides
    seeds: list[int] | None = None  # repeat every run once per seed (sets `seed`)
    baseline: str | None = None  # the run every other run is compared with
    metrics: list[Any] = field(default_factory=lambda: ["psnr_y", "ssim_y"])
    eval: EvalSettings = field(default_factory=EvalSettings)
    report: ReportSettings = field(default_factory=ReportSettings)
    notes: str = ""  # limits of the comparison, printed in the report


@dataclass
class Job:
    """One training run of the ablation: a run name, a seed (or None) and its config."""

    run: str
    seed: int | None
    config: Config

    @property
    def label(self) -> str:
        return self.run if self.seed is None else f"{self.run}/seed{self.seed}"

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
    sets: dict[str, EvalSet]
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

    def jobs_of(self, run: str) -> list[Job]:
        return [j for j in self.jobs if j.run == run]

    def use_sets(self, hr: str, lr: str | None = None) -> None:
        """Score on one other folder (``--hr`` / ``--lr``) instead of the file's sets."""
        self.sets = {set_name(hr): EvalSet(hr=hr, lr=lr)}


def set_name(folder: str) -> str:
    """A single evaluation folder's set name: the folder's name, or 'images' if unusable."""
    name = Path(folder).name
    return name if SET_NAME.match(name) else "images"


def _check_overrides(items: list[str], where: str) -> None:
    for item in items:
        if "=" not in item:
            raise UserError(f"{where}: '{item}' is not of the form key=value")


def _job_config(ab: Ablation, run: str, seed: int | None) -> Config:
    data = config_mod.read_config_file(ab.base)
    items = [*ab.spec.overrides, *ab.runs[run], *ab.extra]  # the command line has the last word
    for item in items:
        item = item.replace(OUT_TOKEN, str(ab.out))
        item = item.replace(SEED_TOKEN, str(seed if seed is not None else data.get("seed", 0)))
        try:
            config_mod.apply_override(data, item)
        except UserError as exc:
            raise UserError(f"{ab.path}: run '{run}': {exc}") from None
    if seed is not None:
        data["seed"] = seed
    folder = ab.out / run if seed is None else ab.out / run / f"seed{seed}"
    data["run_dir"] = str(folder)
    data["name"] = run
    try:
        return config_mod.build_config(data, name=run)
    except UserError as exc:
        raise UserError(f"{ab.path}: run '{run}': {exc}") from None


def _eval_sets(path: Path, ev: EvalSettings, base_cfg: Config) -> dict[str, EvalSet]:
    sets = dict(ev.sets)
    if ev.hr is not None:
        if sets:
            raise UserError(f"{path}: eval: give either hr/lr or sets, not both")
        sets = {set_name(ev.hr): EvalSet(ev.hr, ev.lr, ev.limit)}
    if not sets:
        val = base_cfg.data.val
        root = val.get("root") if isinstance(val, dict) else None
        if root is None:
            raise UserError(f"{path}: eval has no images and the base config has no data.val "
                            "root; set eval: {hr: path/to/HR} or eval: {sets: {...}}")
        sets = {"val": EvalSet(hr=str(root), limit=ev.limit)}
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
    data = config_mod.read_config_file(path)
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
        if name.lower() in ("bicubic", "hr"):
            raise UserError(f"{path}: run name '{name}' is taken by the report (bicubic and HR "
                            "are always shown); rename the run")
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
    seeds: list[int | None] = list(spec.seeds) if spec.seeds is not None else [None]
    # Seed-major order: every run once before any run twice, so an interrupted study has
    # every arm at its first seeds rather than some arms at all seeds.
    ab.jobs = [Job(run, seed, _job_config(ab, run, seed)) for seed in seeds for run in spec.runs]
    return ab


def _network_name(spec: Any) -> str | None:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        return spec["name"]
    return None


def training_networks(cfg: Config) -> set[str]:
    """Names of the loss networks any phase of ``cfg`` trains against (the registry's default
    network for a ``perceptual`` loss that names none)."""
    from plfw.plugins import get_plugins

    names: set[str] = set()
    for phase in cfg.phases.values():
        for spec in (phase.losses or {}).values():
            if not isinstance(spec, dict):
                continue
            network = spec.get("network")
            if network is None and spec.get("name") == "perceptual":
                params = get_plugins().registry.get("loss", "perceptual").params
                default = getattr(params, "__dataclass_fields__", {}).get("network")
                network = default.default if default is not None else None
            name = _network_name(network)
            if name:
                names.add(name)
    return names


def read_state(run_dir: Path) -> dict[str, Any]:
    """A job's ``ablate.json`` (empty when it never ran or the file is damaged)."""
    path = run_dir / STATE_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def final_model(cfg: Config) -> Path | None:
    """The exported generator of the run's last phase that trained."""
    for name in reversed(list(cfg.phases)):
        path = Path(cfg.run_dir) / "models" / f"{name}.pt"
        if cfg.phases[name].steps > 0 and path.is_file():
            return path
    return None


def finished_model(job: Job) -> Path | None:
    """The job's final generator if the job finished, else None."""
    return final_model(job.config) if read_state(job.run_dir).get("finished") else None

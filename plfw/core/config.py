"""Typed run configuration: YAML (+ ``extends``) + ``key=value`` overrides -> plain dataclasses.

The schema below covers the core's own settings. Component specs (generator, datasets, losses,
discriminator, metrics, callbacks) are free-form here and validated later against each plugin's
own params dataclass, so omegaconf's struct mode never blocks a plugin's keys.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from plfw.core.config_files import load_yaml, read_config_file, strip_replace
from plfw.core.errors import UserError, suggest

# The defaults that name built-in plugins, all here (no other core module names a plugin):
#: what a config without ``metrics``, ``plfw eval`` and an ablation score: the paper's measures
DEFAULT_METRICS = ("psnr_y", "ssim_y")
#: a phase without ``losses``: pixel MSE (the paper's SRResNet)
DEFAULT_LOSSES = {"pixel": {"name": "mse"}}
#: what ``match_gradient: true`` matches: the paper's VGG54 content loss
MATCH_GRADIENT_DEFAULT = "vgg54"


@dataclass
class DataSettings:
    train: Any = MISSING  # dataset spec: {name: hr_folder, root: ..., crop: 96, ...}
    val: Any = None  # dataset spec for validation (whole images), or null
    batch_size: int = 16
    workers: int = 0
    val_images: int = 0  # use at most this many validation images (0 = all)


@dataclass
class PhaseSettings:
    steps: int = MISSING  # generator updates in this phase (0 skips the phase)
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    milestones: list[int] = field(default_factory=list)  # phase steps where lr *= gamma
    gamma: float = 0.1
    optimizer: str = "adam"  # adam | adamw (decoupled weight decay, Loshchilov & Hutter 2019)
    weight_decay: float = 0.0  # adamw's decay (adam: must stay 0)
    schedule: str = "step"  # step (milestones x gamma) | cosine (to min_lr at the last step)
    warmup: int = 0  # phase steps of linear warm-up from lr / warmup, before the schedule
    min_lr: float = 0.0  # cosine's final lr
    losses: Any = None  # {label: {name, weight, **params}}; null = {pixel: {name: mse}}
    discriminator: Any = None  # a discriminator spec turns on adversarial training
    d_lr: float | None = None  # defaults to lr
    d_updates: int = 1  # discriminator updates per generator update
    init: str | None = None  # checkpoint or generator weights to start this phase from
    minutes: float = 0.0  # stop the phase early after this much wall time (0 = no limit)
    # match_gradient calibration batch: drawn with this seed (null = the run's seed), so every
    # seed of an ablation run can share one factor
    calibration_seed: int | None = None
    calibration_sr: str = "bicubic"  # the stand-in SR: bicubic | generator (the phase's start)


@dataclass
class TrainSettings:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto | fp32 | bf16 | fp16 (autocast, fp32 master weights; fp16 with a gradient scaler)
    precision: str = "auto"
    channels_last: str = "auto"  # auto | true | false
    # auto (CUDA: on; CPU: PReLU alone in phases of 5000+ steps) | true | false |
    # reduce-overhead (CUDA graphs) | activations (PReLU alone, any phase)
    compile: str = "auto"
    threads: int = 0  # torch CPU threads (0 = torch's default)
    log_every: int = 50
    val_every: int = 1000
    checkpoint_every: int = 1000
    keep_last: int = 3
    ema: float = 0.0  # EMA decay of the generator (0 = off), e.g. 0.999
    grad_clip: float = 0.0  # max gradient norm (0 = no clipping)
    # micro-batches per update: data.batch_size is split into this many forward/backward
    # passes whose gradients add up to one update (memory of one micro-batch)
    accumulate: int = 1
    explode_norm: float = 1.0e6  # a gradient norm above this counts as a bad step
    max_bad_steps: int = 10  # stop after this many non-finite/exploding steps in a row
    deterministic: bool = False
    sync_batchnorm: bool = False  # distributed runs: batch statistics over all processes
    sample_images: int = 4  # validation images shown in the sample grid


@dataclass
class ImageSet:
    """One folder of evaluation images (LR made by MATLAB bicubic when ``lr`` is not given):
    a learning curve's, or an ablation's."""

    hr: str = MISSING
    lr: str | None = None
    limit: int = 0  # at most this many images (sorted by name); 0 = all


@dataclass
class CurveSettings:
    """Learning curves: score the generator at chosen global steps; scores go to curve.jsonl
    (per image, so a study can pair images), checkpoints are not kept for it."""

    at: list[int] = field(default_factory=list)  # global steps (after that many updates)
    metrics: list[Any] = field(default_factory=lambda: list(DEFAULT_METRICS[:1]))
    sets: dict[str, ImageSet] = field(default_factory=dict)


@dataclass
class Config:
    extends: Any = None
    name: str = ""  # defaults to the config file's stem
    run_dir: str = ""  # defaults to runs/<name>
    seed: int = 0
    scale: int = 4
    generator: Any = MISSING
    data: DataSettings = field(default_factory=DataSettings)
    phases: dict[str, PhaseSettings] = field(default_factory=dict)
    train: TrainSettings = field(default_factory=TrainSettings)
    metrics: list[Any] = field(default_factory=lambda: list(DEFAULT_METRICS))
    callbacks: list[Any] = field(default_factory=list)
    curve: CurveSettings = field(default_factory=CurveSettings)
    notes: str = ""  # free text, e.g. how this config departs from the paper




def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise UserError(f"override '{item}' is not of the form key=value (e.g. train.log_every=10)")
    key, raw = item.split("=", 1)
    try:
        value = load_yaml(raw, f"override '{item}'") if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise UserError(f"override '{item}' has an empty key")
    return parts, value


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=value`` in nested mappings (list items by index: ``metrics.0=psnr_y``).

    A dotted key reaches into an existing phase only (``phases.srresnet.steps=2``): a typo in
    the phase's name would otherwise add a phase with default settings. A new phase is set
    whole (``phases.finetune={steps: 100, lr: 1e-5}``), a phase is removed with
    ``phases.NAME=null``."""
    parts, value = _parse_override(item)
    if len(parts) > 2 and parts[0] == "phases":
        phases = data.get("phases")
        known = [k for k, v in phases.items() if v is not None] if isinstance(phases, dict) else []
        if parts[1] not in known:
            raise UserError(f"override '{item}': the config has no phase '{parts[1]}'"
                            f"{suggest(parts[1], [str(k) for k in known])}; a new phase is set "
                            f"whole: phases.{parts[1]}={{steps: ..., ...}}")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            try:
                idx = int(part)
                node[idx]  # noqa: B018 - bounds check
            except (ValueError, IndexError):
                raise UserError(f"override '{item}': '{part}' is not a valid index into a list "
                                f"of {len(node)} items") from None
            if last:
                node[idx] = value
            else:
                node = node[idx]
            continue
        if not isinstance(node, dict):
            raise UserError(f"override '{item}': '{'.'.join(parts[:i])}' is not a mapping")
        if last:
            node[part] = value
        else:
            if not isinstance(node.get(part), dict | list):
                node[part] = {}
            node = node[part]


def _dataclass_of(tp: Any) -> type | None:
    return tp if dataclasses.is_dataclass(tp) else None


def _check_container(tp: Any, value: Any, path: str) -> None:
    """A mapping where a list belongs (or the reverse) would crash omegaconf's merge."""
    origin = typing.get_origin(tp)
    if origin is list and isinstance(value, dict):
        raise UserError(f"{path}: expected a list, got {value!r}; an item override like "
                        f"{path}.0=... needs the list in the config file, else set it whole: "
                        f"{path}=[a, b]")
    if origin is dict and isinstance(value, list):
        raise UserError(f"{path}: expected a mapping, got {value!r}")


def check_keys(data: Any, schema: type, where: str) -> None:
    """Reject unknown keys in the typed part of the config, naming the closest valid ones."""
    if not isinstance(data, dict):
        raise UserError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(schema)
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in hints:
            raise UserError(f"unknown config key '{path}'{suggest(str(key), hints)}")
        tp = hints[key]
        _check_container(tp, value, path)
        if _dataclass_of(tp) and isinstance(value, dict):
            check_keys(value, tp, path)
        elif typing.get_origin(tp) is dict and isinstance(value, dict):
            inner = _dataclass_of(typing.get_args(tp)[1])
            if inner:
                for name, sub in value.items():
                    if sub is not None:
                        check_keys(sub, inner, f"{path}.{name}")


T = typing.TypeVar("T")


def parse_typed(data: dict[str, Any], schema: type[T], what: str = "config") -> T:
    """Validate a plain mapping against a dataclass schema (unknown keys named with the closest
    valid ones, types checked by omegaconf) and return the dataclass with plain values."""
    check_keys(data, schema, "")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), data)
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise UserError(f"{what} is missing required key(s): {', '.join(missing)}")
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or what
        raise UserError(f"{key}: {str(exc).splitlines()[0]}") from None
    assert isinstance(obj, schema)
    return _plain(obj)


#: What a phase may be called: it names files (models/<phase>.pt, samples/<phase>_stepN.png), so
#: nothing that could reach outside the run directory (no separators, no leading dot).
PHASE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")


def check_phase_name(name: Any) -> None:
    """A one-line UserError unless ``name`` is a safe phase name (see PHASE_NAME)."""
    if isinstance(name, str) and PHASE_NAME.fullmatch(name):
        return
    fixed = re.sub(r"[^A-Za-z0-9_.-]", "_", str(name)).lstrip(".")[:100] or "phase"
    raise UserError(f"phases: phase name {str(name)!r} is not allowed (it names files in the run "
                    f"directory): use up to 100 letters, digits, '_', '.' and '-', not starting "
                    f"with '.'; rename it, e.g. to {fixed!r}")


def _check_number(where: str, value: float, low: float = 0.0, below: float = math.inf,
                  what: str = "a finite number >= 0") -> None:
    if not (math.isfinite(value) and low <= value < below):
        raise UserError(f"{where}: expected {what}, got {value!r}")


def check_settings(cfg: Config) -> None:
    """Values the schema's types let through but training cannot use (one-line errors)."""
    for name, ps in cfg.phases.items():
        where = f"phases.{name}"
        if ps.steps < 0:
            raise UserError(f"{where}.steps: expected a number of steps >= 0 (0 skips the "
                            f"phase), got {ps.steps}")
        _check_number(f"{where}.lr", ps.lr)
        if ps.d_lr is not None:
            _check_number(f"{where}.d_lr", ps.d_lr)
        _check_number(f"{where}.gamma", ps.gamma)
        _check_number(f"{where}.weight_decay", ps.weight_decay)
        _check_number(f"{where}.min_lr", ps.min_lr)
        if ps.optimizer not in ("adam", "adamw"):
            raise UserError(f"{where}.optimizer: expected adam or adamw, got {ps.optimizer!r}")
        if ps.optimizer == "adam" and ps.weight_decay:
            raise UserError(f"{where}.weight_decay: set optimizer: adamw for weight decay "
                            "(Adam's L2 decay is not offered: it interacts with the moments)")
        if ps.schedule not in ("step", "cosine"):
            raise UserError(f"{where}.schedule: expected step or cosine, got {ps.schedule!r}")
        if ps.warmup < 0:
            raise UserError(f"{where}.warmup: expected steps >= 0, got {ps.warmup}")
        if any(m < 0 for m in ps.milestones):
            raise UserError(f"{where}.milestones: expected phase steps >= 0, got "
                            f"{ps.milestones}")
    _check_number("train.ema", cfg.train.ema, below=1.0,
                  what="a decay in [0, 1) (0 = off, e.g. 0.999)")
    n = cfg.train.accumulate
    if n < 1 or cfg.data.batch_size % n:
        raise UserError(f"train.accumulate: expected a divisor of data.batch_size "
                        f"({cfg.data.batch_size}) >= 1, got {n}")
    if n > 1 and any(ps.d_updates != 1 for ps in cfg.phases.values()):
        raise UserError("train.accumulate > 1 works with d_updates: 1 only")


def build_config(data: dict[str, Any], name: str = "") -> Config:
    """Validate a plain mapping against the schema and return a typed Config."""
    data = strip_replace(dict(data))  # `_replace: true` set by an override: nothing to merge
    data.pop("extends", None)
    # A phase set to null in an override or a child config removes it.
    if isinstance(data.get("phases"), dict):
        data["phases"] = {k: v for k, v in data["phases"].items() if v is not None}
        for phase in data["phases"]:
            check_phase_name(phase)
    cfg = parse_typed(data, Config, "config")
    if not cfg.name:
        cfg.name = name or "run"
    if not cfg.run_dir:
        cfg.run_dir = str(Path("runs") / cfg.name)
    if not cfg.phases:
        raise UserError("config defines no phases: add e.g. phases: {srresnet: {steps: 1000}}")
    if cfg.scale not in (2, 3, 4, 8):
        raise UserError(f"config: scale must be 2, 3, 4 or 8, got {cfg.scale}")
    check_settings(cfg)
    for name, ps in cfg.phases.items():
        if ps.calibration_sr not in ("bicubic", "generator"):
            raise UserError(f"phases.{name}.calibration_sr: expected bicubic or generator, got "
                            f"{ps.calibration_sr!r}")
    if any(s < 1 for s in cfg.curve.at) or len(set(cfg.curve.at)) != len(cfg.curve.at):
        raise UserError(f"curve.at: expected distinct steps >= 1, got {cfg.curve.at}")
    if cfg.curve.at and not cfg.curve.sets:
        raise UserError("curve.at is set but curve.sets is empty: add e.g. "
                        "curve: {sets: {Set5: {hr: path/to/HR}}}")
    _check_numbers(cfg)
    return cfg


def _check_numbers(cfg: Config) -> None:
    """Counts, intervals and the seed, which would otherwise fail deep in training with a
    traceback (``checkpoint_every=0``: modulo by zero) or be quietly misused: one line naming
    the key."""
    t, d = cfg.train, cfg.data
    for key, value, low, hint in (
            ("train.log_every", t.log_every, 1, "steps between log lines"),
            ("train.val_every", t.val_every, 1, "steps between validations"),
            ("train.checkpoint_every", t.checkpoint_every, 1, "steps between checkpoints"),
            ("train.keep_last", t.keep_last, 1, "checkpoints kept"),
            ("train.max_bad_steps", t.max_bad_steps, 1, "bad steps in a row before stopping"),
            ("train.threads", t.threads, 0, "0 = torch's default"),
            ("train.sample_images", t.sample_images, 0, "0 = no sample grid"),
            ("data.batch_size", d.batch_size, 1, "images per step and process"),
            ("data.workers", d.workers, 0, "0 = load in the main process"),
            ("data.val_images", d.val_images, 0, "0 = all")):
        if value < low:
            raise UserError(f"{key}: expected an integer >= {low} ({hint}), got {value}")
    if not 0 <= cfg.seed < 2**32:
        raise UserError(f"seed: expected an integer in 0 .. {2**32 - 1}, got {cfg.seed}")
    if not 0 <= t.grad_clip < float("inf"):
        raise UserError(f"train.grad_clip: expected a finite number >= 0 (0 = no clipping), got "
                        f"{t.grad_clip}")
    if not t.explode_norm > 0:  # inf is allowed: no norm counts as exploding
        raise UserError(f"train.explode_norm: expected a number > 0, got {t.explode_norm}")


def _plain(obj: Any) -> Any:
    """Turn any omegaconf containers left inside free-form fields into dicts and lists."""
    if OmegaConf.is_config(obj):
        return OmegaConf.to_container(obj, resolve=True)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            setattr(obj, f.name, _plain(getattr(obj, f.name)))
        return obj
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Config file + overrides -> validated Config. Raises UserError on any mistake."""
    path = Path(path)
    data = read_config_file(path)
    for item in overrides or []:
        apply_override(data, item)
    return build_config(data, name=path.stem)


def to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain Python values (for YAML files and checkpoints)."""
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)

"""From a validated config and a registry to components: the one place every command builds.

The trainer, ``plfw bench``, ``plfw ablate`` and ``plfw eval`` build through these functions,
so the step bench times is the step training runs and every metric gets the same border (every
command that runs a trained model opens it with :func:`plfw.inference.model.open_model`). The
registry is an argument everywhere: a command creates it once
(:func:`plfw.core.plugins.load_plugins`) and passes it down; nothing here looks up a process-wide
one."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from plfw.core.config import Config, check_phase_name
from plfw.core.errors import UserError
from plfw.core.registry import Registry, split_spec
from plfw.device.runtime import Runtime
from plfw.training.phase import Phase, build_phase, calibrate_losses, ema_losses, make_ema
from plfw.training.step import TrainStep

Metric = Callable[[torch.Tensor, torch.Tensor], float]


# ---------------------------------------------------------------- training parts
def generator_spec(registry: Registry, cfg: Config) -> dict[str, Any]:
    """The generator's spec with the config's scale filled in: what exports store."""
    return registry.with_defaults("generator", cfg.generator, scale=cfg.scale)


def build_generator(registry: Registry, cfg: Config,
                    rt: Runtime) -> tuple[nn.Module, tuple[float, float]]:
    """The config's generator on the runtime's device, and its output range."""
    generator = registry.build("generator", generator_spec(registry, cfg), "generator")
    if getattr(generator, "scale", cfg.scale) != cfg.scale:
        raise UserError(f"generator scale {generator.scale} differs from scale "
                        f"{cfg.scale}: set one of them")
    output_range = tuple(getattr(generator, "output_range", (0.0, 1.0)))
    generator.to(rt.device, memory_format=rt.memory_format())
    return generator, output_range  # type: ignore[return-value]


def build_dataset(registry: Registry, spec: Any, cfg: Config, where: str,
                  **defaults: Any) -> tuple[dict[str, Any], Any]:
    """(full spec, dataset) of a ``data`` entry, with the config's scale filled in."""
    full = registry.with_defaults("dataset", spec, scale=cfg.scale, **defaults)
    return full, registry.build("dataset", full, where)


def seeded_phase(registry: Registry, cfg: Config, index: int, generator: nn.Module,
                 rt: Runtime, output_range: tuple[float, float], crop: int | None) -> Phase:
    """Phase ``index`` of ``cfg`` built from a seed of its own (discriminator init, a loss
    network with random weights), so a resumed run rebuilds the very same frozen networks and
    building it does not advance the training RNG."""
    name = list(cfg.phases)[index]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed * 1009 + index)
        return build_phase(name, cfg.phases[name], generator, rt, output_range, crop,
                           cfg.scale, registry)


def check_phases(registry: Registry, cfg: Config, generator: nn.Module, rt: Runtime,
                 output_range: tuple[float, float], crop: int | None,
                 output_path: Callable[[str, str], Any]) -> None:
    """Build every phase that will train once and throw it away, so a mistake in a later
    phase (a bad tap, an unknown discriminator) stops the run before the first step instead of
    after the earlier phases trained. The RNG states are put back: what training draws is
    unchanged. Also refuses phase names that would write outside the run directory
    (``output_path`` checks each phase's ``models/<phase>.pt``)."""
    cuda = rt.device.type == "cuda"
    devices = [torch.cuda.current_device() if rt.device.index is None
               else rt.device.index] if cuda else []
    py_state = random.getstate()
    try:
        with torch.random.fork_rng(devices=devices):
            for index, (name, ps) in enumerate(cfg.phases.items()):
                check_phase_name(name)
                output_path("models", f"{name}.pt")
                if ps.steps > 0:
                    built = seeded_phase(registry, cfg, index, generator, rt, output_range, crop)
                    ema = ema_losses(built)
                    if ema and cfg.train.ema <= 0:
                        raise UserError(f"phases.{name}.losses.{ema[0]} compares with the EMA "
                                        f"generator: set train.ema (e.g. 0.999)")
    finally:
        random.setstate(py_state)


def bench_step(registry: Registry, cfg: Config, phase: str, rt: Runtime, batch: int,
               crop: int) -> tuple[TrainStep, Callable[[], Any]]:
    """The trainer's own step for ``phase`` (same builders, calibration and EMA) and a
    zero-argument call of it on one fixed synthetic batch: what ``plfw bench`` times."""
    torch.manual_seed(cfg.seed)
    gen, out_range = build_generator(registry, cfg, rt)
    built = seeded_phase(registry, cfg, list(cfg.phases).index(phase), gen, rt, out_range, crop)
    lr = rt.to(torch.rand(batch, 3, crop // cfg.scale, crop // cfg.scale))
    hr01 = rt.to(torch.rand(batch, 3, crop, crop))
    lo, hi = out_range
    calibrate_losses(built, hr01 * (hi - lo) + lo)
    step = TrainStep(gen, built, rt, cfg.train, out_range, make_ema(gen, cfg.train.ema))
    return step, lambda: step(lr, hr01)


# ---------------------------------------------------------------- metrics
def build_metrics(registry: Registry, specs: Sequence[Any], border: int,
                  where: str = "metrics") -> dict[str, Metric]:
    """Metric plugins by name or spec, keyed by name (the first of repeated names), each with
    ``border`` filled in where it takes one, so every metric cuts the same border; an unknown
    name is a one-line error with the closest names."""
    metrics: dict[str, Metric] = {}
    for spec in specs:
        if isinstance(spec, str) and not spec.strip():
            continue
        name, params = split_spec(spec.strip() if isinstance(spec, str) else spec, where)
        if name not in metrics:
            full = registry.with_defaults("metric", {"name": name, **params}, border=border)
            metrics[name] = registry.build("metric", full, where)
    return metrics

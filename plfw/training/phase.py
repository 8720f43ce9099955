"""Building what one training phase needs, from the config: the losses, the discriminator,
optimizers and schedulers, and the generator's EMA. :mod:`plfw.assembly` builds through these
functions for the trainer and ``plfw bench`` alike."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from plfw.core.config import DEFAULT_LOSSES, PhaseSettings
from plfw.core.errors import UserError
from plfw.core.registry import Registry
from plfw.device.runtime import Runtime
from plfw.training.calibration import GradientMatched, reference_spec


@dataclass
class Phase:
    """Everything one phase builds: losses, optimizers, schedulers, maybe a discriminator."""

    name: str
    settings: PhaseSettings
    losses: dict[str, nn.Module]
    weights: dict[str, float]
    adversarial: str | None
    discriminator: nn.Module | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None
    sched_g: torch.optim.lr_scheduler.LRScheduler
    sched_d: torch.optim.lr_scheduler.LRScheduler | None
    #: fp16 only: one dynamic loss scaler per optimizer (an overflow in one network's
    #: gradients then lowers only that network's scale)
    scaler_g: torch.amp.GradScaler | None = None
    scaler_d: torch.amp.GradScaler | None = None


def make_optimizer(params: Any, lr: float, ps: PhaseSettings) -> torch.optim.Optimizer:
    """Adam or AdamW as the step expects them: fused, so skipping a bad update needs no host
    sync (fused kernels honour ``found_inf``)."""
    betas = (float(ps.betas[0]), float(ps.betas[1]))
    if ps.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=ps.weight_decay,
                                 fused=True)
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)


class LrFactor:
    """The lr multiplier at a phase step: linear warm-up, then step decay or cosine. A class,
    not a lambda, so it is plain data (a scheduler's state dict keeps no code)."""

    def __init__(self, ps: PhaseSettings, base_lr: float) -> None:
        self.warmup, self.steps = ps.warmup, max(ps.steps, 1)
        self.schedule, self.milestones, self.gamma = ps.schedule, sorted(ps.milestones), ps.gamma
        self.floor = ps.min_lr / base_lr if base_lr > 0 else 0.0

    def __call__(self, step: int) -> float:
        ramp = min(1.0, (step + 1) / self.warmup) if self.warmup else 1.0
        if self.schedule == "cosine":
            span = max(self.steps - self.warmup, 1)
            t = min(max(step - self.warmup, 0) / span, 1.0)
            return ramp * (self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * t)))
        return ramp * self.gamma ** sum(step >= m for m in self.milestones)


def make_schedule(opt: torch.optim.Optimizer, ps: PhaseSettings, base_lr: float
                  ) -> torch.optim.lr_scheduler.LRScheduler:
    """The paper's step decay as before (MultiStepLR, same checkpoint state); warm-up or
    cosine through :class:`LrFactor`."""
    if ps.schedule == "step" and not ps.warmup:
        return torch.optim.lr_scheduler.MultiStepLR(opt, ps.milestones, ps.gamma)
    return torch.optim.lr_scheduler.LambdaLR(opt, LrFactor(ps, base_lr))


def make_ema(generator: nn.Module, decay: float) -> nn.Module | None:
    """A frozen copy of the generator that the step averages into (None when decay is 0)."""
    return copy.deepcopy(generator).eval().requires_grad_(False) if decay > 0 else None


def build_phase(name: str, ps: PhaseSettings, generator: nn.Module, rt: Runtime,
                output_range: tuple[float, float], crop: int | None, scale: int,
                registry: Registry) -> Phase:
    """Build one phase's losses, discriminator, optimizers and schedulers for ``generator``.
    A loss with ``match_gradient`` is wrapped in
    :class:`plfw.training.calibration.GradientMatched`."""
    losses: dict[str, nn.Module] = {}
    weights: dict[str, float] = {}
    adversarial = None
    specs = ps.losses if ps.losses is not None else copy.deepcopy(DEFAULT_LOSSES)
    if not isinstance(specs, dict) or not specs:
        raise UserError(f"phases.{name}.losses: give at least one loss, e.g. "
                        "{pixel: {name: mse, weight: 1.0}}")
    for label, spec in specs.items():
        if spec is None:
            continue
        spec = dict(spec) if isinstance(spec, dict) else {"name": spec}
        weight = float(spec.pop("weight", 1.0))
        match = spec.pop("match_gradient", None)
        where = f"phases.{name}.losses.{label}"
        loss = registry.build("loss", spec, where).to(rt.device)
        if match is not None and match is not False:
            loss = GradientMatched(loss, reference_spec(match, where, registry), scale, where,
                                   registry)
        if hasattr(loss, "set_image_range"):
            loss.set_image_range(*output_range)
        if getattr(loss, "adversarial", False):
            if adversarial is not None:
                raise UserError(f"phases.{name}.losses: more than one adversarial loss")
            adversarial = label
        losses[label], weights[label] = loss, weight
    disc = None
    if ps.discriminator is not None:
        spec = registry.with_defaults("discriminator", ps.discriminator, input_size=crop or None)
        disc = registry.build("discriminator", spec, f"phases.{name}.discriminator")
        disc.to(rt.device, memory_format=rt.memory_format())
    if (disc is None) != (adversarial is None):
        fix = "add a discriminator" if disc is None else "add an adversarial loss"
        raise UserError(f"phases.{name}: an adversarial loss and a discriminator go "
                        f"together; {fix}")
    opt_g = make_optimizer(generator.parameters(), ps.lr, ps)
    sched_g = make_schedule(opt_g, ps, ps.lr)
    opt_d = sched_d = None
    if disc is not None:
        opt_d = make_optimizer(disc.parameters(), ps.d_lr or ps.lr, ps)
        sched_d = make_schedule(opt_d, ps, ps.d_lr or ps.lr)
    scaler_g = scaler_d = None
    if rt.fp16:
        scaler_g = torch.amp.GradScaler(rt.device.type)
        scaler_d = torch.amp.GradScaler(rt.device.type) if disc is not None else None
    return Phase(name, ps, losses, weights, adversarial, disc, opt_g, opt_d, sched_g, sched_d,
                 scaler_g, scaler_d)


def ema_losses(phase: Phase) -> list[str]:
    """Labels of the phase's losses that compare with the EMA generator (``needs_ema``)."""
    return [label for label, m in phase.losses.items() if getattr(m, "needs_ema", False)]


@torch.no_grad()
def calibrate_losses(phase: Phase, hr: torch.Tensor,
                     sr: torch.Tensor | None = None) -> dict[str, Any]:
    """Let losses that ask for it (``feature_scale: auto``, ``match_gradient``) see one HR
    batch in the generator's output range; ``sr`` (same range) replaces gradient matching's
    bicubic stand-in. Returns what each calibrated, by label."""
    return {label: (m.calibrate(hr, sr=sr) if isinstance(m, GradientMatched) else m.calibrate(hr))
            for label, m in phase.losses.items() if hasattr(m, "calibrate")}

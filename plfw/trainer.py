"""The training loop: phases of generator updates, optionally against a discriminator.

Reading order: ``Trainer.__init__`` builds every component from the config; ``fit`` runs the
phases in order (the paper: SRResNet with MSE, then SRGAN initialised from it); ``_step`` is one
update; checkpoints make any step resumable bit for bit on the CPU. Everything the run writes
lands in the run directory: config.yaml, metrics.jsonl, checkpoints/, models/, samples/,
summary.{json,md,png}.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

import plfw
from plfw import config as config_mod
from plfw.calibration import GradientMatched, reference_spec
from plfw.checkpoint import (
    CheckpointDir,
    atomic_torch_save,
    atomic_write_bytes,
    load_checkpoint,
    rng_state,
    set_rng_state,
)
from plfw.config import Config, PhaseSettings
from plfw.errors import UserError
from plfw.evaluate import Method, Pair, bicubic, evaluate
from plfw.features import is_frozen
from plfw.generators import GENERATOR_FORMAT, batch_runner, load_generator
from plfw.plugins import get_plugins
from plfw.runtime import Runtime, make_runtime
from plfw.step import TrainStep, make_adam
from plfw.visuals import center_crop, grid, save_png


class TrainingDiverged(UserError):
    """Too many non-finite or exploding steps in a row."""


def with_defaults(spec: Any, kind: str, **defaults: Any) -> dict[str, Any]:
    """Fill params the user left out (e.g. ``scale``) when the component declares them."""
    from plfw.registry import split_spec

    name, params = split_spec(spec, kind)
    component = get_plugins().registry.get(kind, name)
    fields = getattr(component.params, "__dataclass_fields__", {})
    for key, value in defaults.items():
        if key in fields and key not in params and value is not None:
            params[key] = value
    return {"name": name, **params}


class StepBatches(torch.utils.data.Sampler[list[tuple[int, int]]]):
    """Batches that depend only on (seed, step): resuming at step s replays exactly what an
    uninterrupted run would have seen, whatever the number of workers. Each item carries its
    own seed for crops and flips. In distributed runs each rank takes its slice of one global
    batch, so N processes see the same images as one process with an N times larger batch."""

    def __init__(self, size: int, batch: int, seed: int, start: int, rank: int = 0,
                 world: int = 1) -> None:
        self.size, self.batch, self.seed, self.start = size, batch, seed, start
        self.rank, self.world = rank, world

    def for_step(self, step: int) -> list[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        total = self.batch * self.world
        reps = math.ceil(total / self.size)
        order = torch.cat([torch.randperm(self.size, generator=g) for _ in range(reps)])[:total]
        seeds = torch.randint(0, 2**62, (total,), generator=g)
        items = list(zip(order.tolist(), seeds.tolist(), strict=True))
        return items[self.rank * self.batch: (self.rank + 1) * self.batch]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start
        while True:
            yield self.for_step(step)
            step += 1

    def __len__(self) -> int:  # an endless stream; DataLoader only needs a number
        return sys.maxsize


class SeededItems(torch.utils.data.Dataset):
    """Serves ``dataset[index]`` with torch's and Python's RNG seeded per item."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            item = self.dataset[index]
        random.setstate(state)
        return item


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


def build_phase(name: str, ps: PhaseSettings, generator: nn.Module, rt: Runtime,
                output_range: tuple[float, float], crop: int | None, scale: int = 4) -> Phase:
    """Build one phase's losses, discriminator, optimizers and schedulers for ``generator``.
    A loss with ``match_gradient`` is wrapped in :class:`plfw.calibration.GradientMatched`."""
    losses: dict[str, nn.Module] = {}
    weights: dict[str, float] = {}
    adversarial = None
    specs = ps.losses if ps.losses is not None else {"pixel": {"name": "mse"}}
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
        loss = plfw.build("loss", spec, where).to(rt.device)
        if match is not None and match is not False:
            loss = GradientMatched(loss, reference_spec(match, where), scale, where)
        if hasattr(loss, "set_image_range"):
            loss.set_image_range(*output_range)
        if getattr(loss, "adversarial", False):
            if adversarial is not None:
                raise UserError(f"phases.{name}.losses: more than one adversarial loss")
            adversarial = label
        losses[label], weights[label] = loss, weight
    disc = None
    if ps.discriminator is not None:
        spec = with_defaults(ps.discriminator, "discriminator", input_size=crop or None)
        disc = plfw.build("discriminator", spec, f"phases.{name}.discriminator")
        disc.to(rt.device, memory_format=rt.memory_format())
    if (disc is None) != (adversarial is None):
        fix = "add a discriminator" if disc is None else "add an adversarial loss"
        raise UserError(f"phases.{name}: an adversarial loss and a discriminator go "
                        f"together; {fix}")
    opt_g = make_adam(generator.parameters(), ps.lr, tuple(ps.betas))
    sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, ps.milestones, ps.gamma)
    opt_d = sched_d = None
    if disc is not None:
        opt_d = make_adam(disc.parameters(), ps.d_lr or ps.lr, tuple(ps.betas))
        sched_d = torch.optim.lr_scheduler.MultiStepLR(opt_d, ps.milestones, ps.gamma)
    return Phase(name, ps, losses, weights, adversarial, disc, opt_g, opt_d, sched_g, sched_d)


def frozen_keys(module: nn.Module) -> set[str]:
    """State-dict keys that belong to frozen loss networks (not worth saving: rebuilt)."""
    prefixes = [f"{n}." for n, m in module.named_modules() if n and is_frozen(m)]
    return {k for k in module.state_dict() if any(k.startswith(p) for p in prefixes)}


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    skip = frozen_keys(module)
    return {k: v for k, v in module.state_dict().items() if k not in skip}


class Trainer:
    def __init__(self, cfg: Config, resume: bool = False, overwrite: bool = False,
                 progress: bool = True) -> None:
        self.cfg = cfg
        t = cfg.train
        self.rt: Runtime = make_runtime(t.device, t.precision, t.channels_last, t.compile,
                                        t.threads)
        if t.sync_batchnorm and self.rt.device.type != "cuda":
            raise UserError("train.sync_batchnorm needs CUDA (PyTorch's SyncBatchNorm runs on "
                            "GPUs only); set train.sync_batchnorm=false on the CPU")
        if self.rt.distributed and not torch.distributed.is_initialized():
            backend = "nccl" if self.rt.device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend)
        self.run_dir = Path(cfg.run_dir)
        self.ckpt = CheckpointDir(self.run_dir / "checkpoints", t.keep_last)
        self.progress = progress and self.rt.is_main
        if not resume and self.ckpt.latest() is not None and not overwrite:
            raise UserError(f"{self.run_dir} already holds a run; continue it with --resume, "
                            f"start over with --overwrite, or set run_dir=...")
        if t.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)

        self.generator: nn.Module = plfw.build(
            "generator", with_defaults(cfg.generator, "generator", scale=cfg.scale), "generator")
        if getattr(self.generator, "scale", cfg.scale) != cfg.scale:
            raise UserError(f"generator scale {self.generator.scale} differs from scale "
                            f"{cfg.scale}: set one of them")
        self.output_range = tuple(getattr(self.generator, "output_range", (0.0, 1.0)))
        self.generator.to(self.rt.device, memory_format=self.rt.memory_format())
        self.ema = copy.deepcopy(self.generator).eval() if t.ema > 0 else None
        if self.ema is not None:
            self.ema.requires_grad_(False)

        self.train_spec = with_defaults(cfg.data.train, "dataset", scale=cfg.scale)
        self.train_set = plfw.build("dataset", self.train_spec, "data.train")
        if len(self.train_set) == 0:
            raise UserError("data.train: the training dataset is empty")
        self.val_pairs = self._val_pairs()
        self.metrics = {self._metric_name(m): plfw.build(
            "metric", with_defaults(m, "metric", border=cfg.scale), "metrics")
            for m in cfg.metrics}
        self.callbacks = [plfw.build("callback", c, "callbacks") for c in cfg.callbacks]
        self.hook = get_plugins().manager.hook
        self._prepare_run_dir(resume, overwrite)

        self.global_step = 0
        self.phase_index = 0
        self.phase_step = 0
        self.bad_steps = 0
        self.phase: Phase | None = None
        self._stepper: TrainStep | None = None
        self._resume_state: dict[str, Any] | None = None
        if resume:
            latest = self.ckpt.latest()
            if latest is None:
                raise UserError(f"{self.ckpt.folder}: no checkpoint to resume from; start "
                                f"without --resume")
            self._resume_state = load_checkpoint(latest)
            self.global_step = int(self._resume_state["global_step"])
            self.phase_index = int(self._resume_state["phase_index"])
            self.phase_step = int(self._resume_state["phase_step"])
            self._drop_logs_after(self.global_step)

    def _drop_logs_after(self, step: int) -> None:
        """On resume, forget log records of steps the checkpoint does not contain (they will be
        logged again), so metrics.jsonl reads as one uninterrupted run."""
        path = self.run_dir / "metrics.jsonl"
        if not self.rt.is_main or not path.is_file():
            return
        kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        atomic_write_bytes(path, "".join(f"{line}\n" for line in kept).encode())

    # ---------------------------------------------------------------- setup
    @staticmethod
    def _metric_name(spec: Any) -> str:
        return spec if isinstance(spec, str) else str(spec.get("name"))

    def _prepare_run_dir(self, resume: bool, overwrite: bool) -> None:
        """Fail before training if the run directory is unusable; called once every component
        was built, so a config mistake leaves no run directory behind."""
        if not self.rt.is_main:
            return
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            probe = self.run_dir / ".plfw-write-test"
            probe.write_bytes(b"0" * 4096)
            probe.unlink()
        except OSError as exc:
            raise UserError(f"run directory {self.run_dir} is not writable "
                            f"({exc.strerror or exc}); set run_dir=... to another folder") from None
        if not resume and overwrite:
            for old in self.ckpt.steps():
                self.ckpt.path(old).unlink(missing_ok=True)
            (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
        atomic_write_bytes(self.run_dir / "config.yaml", config_mod.to_yaml(self.cfg).encode())

    def _val_pairs(self) -> list[Pair]:
        spec = self.cfg.data.val
        if spec is None:
            return []
        spec = with_defaults(spec, "dataset", scale=self.cfg.scale, crop=0, augment=False)
        dataset = plfw.build("dataset", spec, "data.val")
        count = len(dataset)
        if self.cfg.data.val_images:
            count = min(count, self.cfg.data.val_images)
        names = getattr(dataset, "names", None) or [f"image{i:03d}" for i in range(count)]
        return [Pair(str(names[i]), *dataset[i]) for i in range(count)]

    def _loader(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        sampler = StepBatches(len(self.train_set), self.cfg.data.batch_size, self.cfg.seed,
                              self.global_step, self.rt.rank, self.rt.world_size)
        workers = self.cfg.data.workers
        loader = torch.utils.data.DataLoader(
            SeededItems(self.train_set), batch_sampler=sampler, num_workers=workers,
            pin_memory=self.rt.device.type == "cuda", persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None)
        return iter(loader)

    def _build_phase(self, name: str, ps: PhaseSettings) -> Phase:
        return build_phase(name, ps, self.generator, self.rt, self.output_range,
                           self.train_spec.get("crop"), self.cfg.scale)

    def _init_generator(self, source: str) -> None:
        module, _ = load_generator(source)
        try:
            self._unwrap(self.generator).load_state_dict(module.state_dict())
        except RuntimeError as exc:
            raise UserError(f"{source}: its generator does not match this config's generator "
                            f"({str(exc).splitlines()[0]})") from None
        if self.ema is not None:
            self.ema.load_state_dict(module.state_dict())

    # ---------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        p = self.phase
        assert p is not None
        return {
            "config": config_mod.to_dict(self.cfg),
            "global_step": self.global_step,
            "phase_index": self.phase_index,
            "phase": p.name,
            "phase_step": self.phase_step,
            "bad_steps": self.bad_steps,
            "generator": self._unwrap(self.generator).state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "discriminator": (self._unwrap(p.discriminator).state_dict()
                              if p.discriminator is not None else None),
            "opt_g": p.opt_g.state_dict(),
            "opt_d": p.opt_d.state_dict() if p.opt_d else None,
            "sched_g": p.sched_g.state_dict(),
            "sched_d": p.sched_d.state_dict() if p.sched_d else None,
            "losses": {k: trainable_state(m) for k, m in p.losses.items()},
            "rng": rng_state(),
        }

    def _restore(self, s: dict[str, Any]) -> None:
        p = self.phase
        assert p is not None
        self._unwrap(self.generator).load_state_dict(s["generator"])
        if self.ema is not None and s.get("ema") is not None:
            self.ema.load_state_dict(s["ema"])
        if p.discriminator is not None and s.get("discriminator") is not None:
            p.discriminator.load_state_dict(s["discriminator"])
        p.opt_g.load_state_dict(s["opt_g"])
        p.sched_g.load_state_dict(s["sched_g"])
        if p.opt_d is not None:
            p.opt_d.load_state_dict(s["opt_d"])
            p.sched_d.load_state_dict(s["sched_d"])  # type: ignore[union-attr]
        for k, m in p.losses.items():
            m.load_state_dict(s["losses"].get(k, {}), strict=False)
        self.bad_steps = int(s.get("bad_steps", 0))
        set_rng_state(s["rng"])

    @staticmethod
    def _unwrap(module: nn.Module) -> nn.Module:
        return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module

    def save_checkpoint(self) -> Path | None:
        """Save unless the weights went non-finite: the latest checkpoint stays a good one."""
        if not self.rt.is_main:
            return None
        tensors = [v for v in self.generator.state_dict().values() if v.is_floating_point()]
        if not bool(torch.stack([v.isfinite().all() for v in tensors]).all()):
            tqdm.write(f"plfw: step {self.global_step}: non-finite generator state, "
                       "checkpoint not written", file=sys.stderr)
            return None
        return self.ckpt.save(self.state(), self.global_step)

    def export_generator(self, phase: str) -> Path:
        """models/<phase>.pt: the generator (EMA when on) with the spec to rebuild it."""
        module = self.ema if self.ema is not None else self._unwrap(self.generator)
        path = self.run_dir / "models" / f"{phase}.pt"
        atomic_torch_save({
            "format": GENERATOR_FORMAT,
            "generator": with_defaults(self.cfg.generator, "generator", scale=self.cfg.scale),
            "state_dict": module.state_dict(),
            "phase": phase,
            "step": self.global_step,
        }, path)
        return path

    # ---------------------------------------------------------------- loop
    def fit(self) -> dict[str, Any]:
        """Run (or finish) every phase, then evaluate and write the summary."""
        names = list(self.cfg.phases)
        for index in range(self.phase_index, len(names)):
            name, ps = names[index], self.cfg.phases[names[index]]
            resuming = self._resume_state is not None and index == self.phase_index
            if not resuming:
                self.phase_index, self.phase_step = index, 0
            if ps.steps <= 0 and not resuming:
                continue
            self._run_phase(name, ps, resuming)
        summary = self.summarize() if self.rt.is_main else {}
        if self.rt.distributed:
            torch.distributed.barrier()
        return summary

    def _run_phase(self, name: str, ps: PhaseSettings, resuming: bool) -> None:
        if ps.init and not resuming:
            self._init_generator(ps.init)
        # Random parts of a phase (discriminator init, a loss network with weights: none) come
        # from a seed of their own, so a resumed run rebuilds the very same frozen networks.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed * 1009 + self.phase_index)
            self.phase = phase = self._build_phase(name, ps)
        if resuming:
            self._restore(self._resume_state)  # type: ignore[arg-type]
            self._resume_state = None
        self._wrap_distributed()
        batches = self._loader()
        if not resuming:
            self._calibrate(phase, batches)
        self._event("on_train_start")
        bar = tqdm(total=ps.steps, initial=self.phase_step, desc=f"{name}", unit="step",
                   disable=not self.progress, dynamic_ncols=True, file=sys.stderr)
        sums: dict[str, torch.Tensor] = {}
        count = 0
        started = phase_started = time.perf_counter()
        limit = ps.minutes * 60.0 if ps.minutes > 0 else math.inf
        try:
            while self.phase_step < ps.steps:
                lr, hr = next(batches)
                logs = self._step(phase, self.rt.to(lr), self.rt.to(hr))
                self.phase_step += 1
                self.global_step += 1
                bar.update(1)
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
                t = self.cfg.train
                last = self.phase_step == ps.steps
                if count and (self.phase_step % t.log_every == 0 or last):
                    means = {k: float(v) / count for k, v in sums.items()}
                    means["lr"] = phase.opt_g.param_groups[0]["lr"]
                    means["steps_per_s"] = count / max(time.perf_counter() - started, 1e-9)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in means.items()
                                     if k.startswith("loss")}, refresh=False)
                    self._log({"phase": name, "step": self.global_step, **means})
                    self._event("on_step_end", step=self.global_step, logs=means)
                    sums, count, started = {}, 0, time.perf_counter()
                    if not last and self._out_of_time(time.perf_counter() - phase_started > limit):
                        tqdm.write(f"plfw: phase {name} stopped at its time limit "
                                   f"({ps.minutes:g} min) after {self.phase_step} steps",
                                   file=sys.stderr)
                        self._log({"phase": name, "step": self.global_step,
                                   "stopped_at_time_limit": self.phase_step})
                        last = True
                if self.val_pairs and (self.phase_step % t.val_every == 0 or last):
                    self.validate()
                if self.phase_step % t.checkpoint_every == 0 or last:
                    self.save_checkpoint()
                if last:
                    break
        finally:
            bar.close()
            self._event("on_train_end")
        if self.rt.is_main:
            self.export_generator(name)

    def _out_of_time(self, mine: bool) -> bool:
        """Ranks agree on stopping (rank 0's clock decides), so none waits for the others."""
        if not self.rt.distributed:
            return mine
        flag = torch.tensor([float(mine)], device=self.rt.device)
        torch.distributed.broadcast(flag, src=0)
        return bool(flag.item())

    def _wrap_distributed(self) -> None:
        if not self.rt.distributed:
            return
        ddp = nn.parallel.DistributedDataParallel
        ids = [self.rt.device.index] if self.rt.device.type == "cuda" else None
        sync = nn.SyncBatchNorm.convert_sync_batchnorm if self.cfg.train.sync_batchnorm else None
        # Only the trained networks are wrapped: a frozen loss network has nothing to reduce.
        if not isinstance(self.generator, ddp):
            self.generator = ddp(sync(self.generator) if sync else self.generator,
                                 device_ids=ids)
        p = self.phase
        if p is not None and p.discriminator is not None and not isinstance(p.discriminator, ddp):
            p.discriminator = ddp(sync(p.discriminator) if sync else p.discriminator,
                                  device_ids=ids)

    def _calibrate(self, phase: Phase, batches: Iterator[Any]) -> None:
        """Let losses that ask for it (feature_scale: auto) see one HR batch of this run."""
        if not any(hasattr(m, "calibrate") for m in phase.losses.values()):
            return
        # The batch of the phase's first step, drawn from a separate sampler: the training
        # stream itself is not advanced, so resumed and uninterrupted runs stay identical.
        sampler = StepBatches(len(self.train_set), self.cfg.data.batch_size, self.cfg.seed,
                              self.global_step)
        items = [SeededItems(self.train_set)[k] for k in sampler.for_step(self.global_step)]
        hr = self.rt.to(torch.stack([hr for _, hr in items]))
        hr = self._to_model_range(hr)
        with torch.no_grad():
            done = {label: m.calibrate(hr) for label, m in phase.losses.items()
                    if hasattr(m, "calibrate")}
        self._log({"phase": phase.name, "step": self.global_step, "calibration": done})

    def _to_model_range(self, x01: torch.Tensor) -> torch.Tensor:
        lo, hi = self.output_range
        return x01 * (hi - lo) + lo

    def _step(self, p: Phase, lr: torch.Tensor, hr01: torch.Tensor) -> dict[str, torch.Tensor]:
        """One update (``plfw.step.TrainStep``); bad-update runs are read back only when the
        loop logs or checkpoints next, or at the phase's end: no host sync on other steps."""
        step = self._stepper
        if step is None or step.phase is not p or step.generator is not self.generator:
            step = self._stepper = TrainStep(self.generator, p, self.rt, self.cfg.train,
                                             self.output_range, self.ema, self.bad_steps)
        logs = step(lr, hr01)
        t, n = self.cfg.train, self.phase_step + 1
        if n % t.log_every == 0 or n % t.checkpoint_every == 0 or n >= p.settings.steps:
            self._check_health(step)
        return logs

    def _check_health(self, step: TrainStep) -> None:
        self.bad_steps, worst = step.check()
        t = self.cfg.train
        if worst >= t.max_bad_steps:
            latest = self.ckpt.latest()
            raise TrainingDiverged(
                f"training diverged by step {self.global_step + 1}: {worst} updates in a row "
                f"had a non-finite loss or a gradient norm above {t.explode_norm:g} (they were "
                f"skipped); the last good checkpoint is {latest or 'none (none was saved yet)'}; "
                f"lower the learning rate or set train.grad_clip")

    # ---------------------------------------------------------------- eval
    def sr_method(self, module: nn.Module | None = None) -> Method:
        """LR (CHW, [0, 1]) -> SR (CHW, [0, 1]) with the EMA generator when there is one."""
        module = module or (self.ema if self.ema is not None else self._unwrap(self.generator))
        return runner(module, self.output_range, self.rt)

    def validate(self) -> dict[str, float]:
        if not self.rt.is_main or not self.val_pairs:
            return {}
        result = evaluate(self.sr_method(), self.val_pairs, self.cfg.scale,
                          metrics=self.metrics)
        metrics = {f"val_{k}": result[k] for k in self.metrics}
        self._log({"phase": self.phase.name if self.phase else "", "step": self.global_step,
                   **metrics})
        self._event("on_validation_end", step=self.global_step, metrics=metrics)
        self._sample_grid()
        return metrics

    def _sample_grid(self) -> None:
        pairs = self.val_pairs[: self.cfg.train.sample_images]
        if not pairs:
            return
        up, sr_run = bicubic(self.cfg.scale), self.sr_method()
        size = 32 * self.cfg.scale
        rows = [[center_crop(up(p.lr), size), center_crop(sr_run(p.lr), size),
                 center_crop(p.hr, size)] for p in pairs]
        phase = self.phase.name if self.phase else "model"
        save_png(grid(rows, ["bicubic", phase, "HR"], [p.name for p in pairs]),
                 self.run_dir / "samples" / f"{phase}_step{self.global_step:08d}.png")

    def summarize(self) -> dict[str, Any]:
        """Score bicubic and each phase's final generator on the validation images."""
        if not self.val_pairs:
            return {}
        methods = {"bicubic": bicubic(self.cfg.scale)}
        for name, ps in self.cfg.phases.items():
            path = self.run_dir / "models" / f"{name}.pt"
            if ps.steps > 0 and path.is_file():
                module, out_range = load_generator(path)
                methods[name] = runner(module.to(self.rt.device), out_range, self.rt)
        results = {name: evaluate(m, self.val_pairs, self.cfg.scale, metrics=self.metrics)
                   for name, m in methods.items()}
        summary = {name: {**{k: r[k] for k in self.metrics}, "per_image": r["per_image"]}
                   for name, r in results.items()}
        atomic_write_bytes(self.run_dir / "summary.json",
                           json.dumps(summary, indent=2).encode())
        table = summary_table(summary, len(self.val_pairs))
        atomic_write_bytes(self.run_dir / "summary.md", table.encode())
        size = 32 * self.cfg.scale
        rows = [[center_crop(m(p.lr), size) for m in methods.values()] + [center_crop(p.hr, size)]
                for p in self.val_pairs[: self.cfg.train.sample_images]]
        save_png(grid(rows, [*methods, "HR"], [p.name for p in self.val_pairs], cell=size * 2),
                 self.run_dir / "summary.png")
        return summary

    # ---------------------------------------------------------------- plumbing
    def _log(self, record: dict[str, Any]) -> None:
        if not self.rt.is_main:
            return
        record = {"time": round(time.time(), 3), **record}
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _event(self, name: str, **kwargs: Any) -> None:
        if not self.rt.is_main:
            return
        getattr(self.hook, f"plfw_{name}")(trainer=self, **kwargs)
        for cb in self.callbacks:
            fn = getattr(cb, name, None)
            if fn is not None:
                fn(self, *kwargs.values())


def runner(module: nn.Module, out_range: tuple[float, float], rt: Runtime) -> Method:
    """Wrap a generator as an evaluation method on single images."""
    batch = batch_runner(module, out_range, rt)
    return lambda lr: batch(lr.unsqueeze(0))[0]


HEADINGS = {"psnr_y": "PSNR-Y [dB]", "ssim_y": "SSIM-Y"}


def summary_table(summary: dict[str, Any], images: int) -> str:
    """Markdown table of the mean of every metric in ``summary`` per method."""
    keys = [k for k in next(iter(summary.values())) if k != "per_image"]
    lines = [f"Mean over {images} validation images (Y channel, border = scale).", "",
             "| method | " + " | ".join(HEADINGS.get(k, k) for k in keys) + " |",
             "|---" * (len(keys) + 1) + "|"]
    for name, r in summary.items():
        cells = [f"{r[k]:.2f}" if k.startswith("psnr") else f"{r[k]:.4f}" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

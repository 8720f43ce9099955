"""The training loop: phases of generator updates, optionally against a discriminator.

Reading order: ``Trainer.__init__`` builds every component from the config through
:mod:`plfw.assembly`; ``fit`` runs the phases in order (the paper: SRResNet with MSE, then SRGAN
initialised from it); ``_run_phase`` is the loop, one :class:`plfw.training.step.TrainStep`
update per step; checkpoints make any step resumable bit for bit on the CPU. Resuming reads in
order: ``RunDir.start`` picks the checkpoint (one for every rank; a torchrun restart too),
``__init__`` sets the step counters from it and drops later log lines, and ``_start_phase``
rebuilds its phase and ``_restore`` loads the state into it. Everything the run
writes lands in the run directory (:mod:`plfw.training.rundir`): config.yaml, metrics.jsonl,
checkpoints/, models/, samples/, summary.{json,md,png}.
"""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from plfw.assembly import (
    build_dataset,
    build_generator,
    build_metrics,
    check_phases,
    generator_spec,
    seeded_phase,
)
from plfw.core import config as config_mod
from plfw.core.config import Config, PhaseSettings
from plfw.core.errors import UserError
from plfw.core.registry import Registry
from plfw.device.runtime import Runtime, init_distributed, make_runtime, unwrap
from plfw.evaluation.evaluate import Method, Pair, bicubic, dataset_pairs, evaluate, load_pairs
from plfw.inference.generators import GENERATOR_FORMAT, load_generator, runner
from plfw.storage.checkpoint import (
    atomic_torch_save,
    rng_state,
    set_rng_state,
    trainable_state,
)
from plfw.training.phase import Phase, calibrate_losses, make_ema
from plfw.training.rundir import CURVE, RunDir
from plfw.training.sampling import batch_at, step_loader
from plfw.training.step import BALANCE_RATIO, TrainStep, loss_balance
from plfw.training.summary import crop_grid, write_summary


class TrainingDiverged(UserError):
    """Too many non-finite or exploding steps in a row."""


class Trainer:
    """Trains ``cfg`` with the components of ``registry`` (the command's plugins:
    :func:`plfw.load_registry`); ``fit`` runs it."""

    def __init__(self, cfg: Config, registry: Registry, resume: bool = False,
                 overwrite: bool = False, progress: bool = True) -> None:
        self.cfg, t, self.registry = cfg, cfg.train, registry
        self.rt: Runtime = make_runtime(t.device, t.precision, t.channels_last, t.compile,
                                        t.threads)
        if t.sync_batchnorm and self.rt.device.type != "cuda":
            raise UserError("train.sync_batchnorm needs CUDA (PyTorch's SyncBatchNorm runs on "
                            "GPUs only); set train.sync_batchnorm=false on the CPU")
        if self.rt.distributed and not torch.distributed.is_initialized():
            init_distributed(self.rt)
        self.dir = RunDir(cfg.run_dir, t.keep_last, self.rt.is_main)
        self.run_dir, self.ckpt = self.dir.path, self.dir.ckpt
        self.progress = progress and self.rt.is_main
        start = self.dir.start(self.rt, resume, overwrite)  # new, or which checkpoint
        # set either way: torch's switch is global, and one process may train many runs
        torch.use_deterministic_algorithms(t.deterministic, warn_only=t.deterministic)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)

        self.generator, self.output_range = build_generator(registry, cfg, self.rt)
        self.ema = make_ema(self.generator, t.ema)
        self.train_spec, self.train_set = build_dataset(registry, cfg.data.train, cfg,
                                                        "data.train")
        if len(self.train_set) == 0:
            raise UserError("data.train: the training dataset is empty")
        self.val_pairs: list[Pair] = []
        if cfg.data.val is not None:
            _, val_set = build_dataset(registry, cfg.data.val, cfg, "data.val", crop=0,
                                       augment=False)
            self.val_pairs = dataset_pairs(val_set, cfg.data.val_images)
        self.metrics = build_metrics(registry, cfg.metrics, cfg.scale, "metrics")
        self.curve_metrics = build_metrics(registry, cfg.curve.metrics, cfg.scale,
                                           "curve.metrics")
        for name, cs in cfg.curve.sets.items():
            for folder in (cs.hr, cs.lr):
                if folder is not None and not Path(folder).is_dir():
                    raise UserError(f"curve.sets.{name}: folder not found: {folder}")
        self._curve_pairs: dict[str, list[Pair]] | None = None
        self.callbacks = [registry.build("callback", c, "callbacks") for c in cfg.callbacks]
        self.check_phases()
        self.dir.prepare(start, config_mod.to_yaml(cfg))

        self.global_step = self.phase_index = self.phase_step = 0
        self.phase: Phase | None = None
        self.stepper: TrainStep | None = None
        self._balance_checked: set[str] = set()
        #: a checkpoint's state until ``_start_phase`` loads it into its rebuilt phase
        self._resume_state = start.state
        if start.state is not None:
            s = start.state
            self.global_step, self.phase_step = int(s["global_step"]), int(s["phase_step"])
            self.phase_index = int(s["phase_index"])
            self.dir.drop_logs_after(self.global_step)

    def check_phases(self) -> None:
        """Build every phase once before the first step (:func:`plfw.assembly.check_phases`)."""
        check_phases(self.registry, self.cfg, self.generator, self.rt, self.output_range,
                     self.train_spec.get("crop"), self.dir.output_path)

    # ---------------------------------------------------------------- loop
    def fit(self) -> dict[str, Any]:
        """Run (or finish) every phase, then evaluate and write the summary."""
        try:
            return self._fit()
        finally:
            self.dir.release()  # another process may work in the run directory now

    def _fit(self) -> dict[str, Any]:
        names = list(self.cfg.phases)
        for index in range(self.phase_index, len(names)):
            name, ps = names[index], self.cfg.phases[names[index]]
            resuming = self._resume_state is not None and index == self.phase_index
            if not resuming:
                self.phase_index, self.phase_step = index, 0
            if ps.steps > 0 or resuming:
                self._run_phase(name, ps, resuming)
        summary = self.summarize() if self.rt.is_main else {}
        if self.rt.distributed:
            torch.distributed.barrier()
        return summary

    def _run_phase(self, name: str, ps: PhaseSettings, resuming: bool) -> None:
        step, batches = self._start_phase(name, ps, resuming)
        t = self.cfg.train
        deadline = time.perf_counter() + ps.minutes * 60.0 if ps.minutes > 0 else math.inf
        self._event("on_train_start")
        bar = tqdm(total=ps.steps, initial=self.phase_step, desc=name, unit="step",
                   disable=not self.progress, dynamic_ncols=True, file=sys.stderr)
        sums: dict[str, torch.Tensor] = {}
        pulls: dict[str, torch.Tensor] = {}
        count, started = 0, time.perf_counter()
        try:
            while self.phase_step < ps.steps:
                lr, hr = next(batches)
                measure = (self.phase_step + 1) % t.log_every == 0  # gradient norms per term
                for k, v in step(self.rt.to(lr), self.rt.to(hr), measure).items():
                    if k.startswith("grad_sr_"):
                        pulls[k] = v  # measured on the interval's last step only
                    else:
                        sums[k] = sums.get(k, 0.0) + v
                count += 1
                self.phase_step += 1
                self.global_step += 1
                bar.update(1)
                n = self.phase_step
                # rank 0's clock decides; no rank asks without a time limit
                out_of_time = (n < ps.steps and deadline < math.inf
                               and self.rt.rank0_decides(time.perf_counter() > deadline))
                stop = n == ps.steps or out_of_time
                log = stop or n % t.log_every == 0
                checkpoint = stop or n % t.checkpoint_every == 0
                validate = bool(self.val_pairs) and (stop or n % t.val_every == 0)
                if log or checkpoint:
                    self._check_health(step)  # the one host sync: bad-update runs
                if log:
                    means = {k: float(v) / count for k, v in sums.items()}
                    means.update({k: float(v) for k, v in pulls.items()})
                    means["lr"] = step.phase.opt_g.param_groups[0]["lr"]
                    means["steps_per_s"] = count / max(time.perf_counter() - started, 1e-9)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in means.items()
                                     if k.startswith("loss")}, refresh=False)
                    self.dir.log({"phase": name, "step": self.global_step, **means})
                    if n <= t.log_every and name not in self._balance_checked:
                        self._balance_checked.add(name)  # the phase's first logged step
                        self._check_balance(name, step.phase.weights, means)
                    self._event("on_step_end", step=self.global_step, logs=means)
                    sums, pulls, count, started = {}, {}, 0, time.perf_counter()
                if out_of_time:
                    tqdm.write(f"plfw: phase {name} stopped at its time limit "
                               f"({ps.minutes:g} min) after {n} steps", file=sys.stderr)
                    self.dir.log({"phase": name, "step": self.global_step,
                                  "stopped_at_time_limit": n})
                if validate:
                    self.validate()
                if self.global_step in self.cfg.curve.at:
                    self.score_curve()
                if checkpoint:
                    self.save_checkpoint()
                if stop:
                    break
        finally:
            bar.close()
            self._event("on_train_end")
        self._check_finite(f"end of phase {name}, no model exported")  # every rank: DDP
        if self.rt.is_main:
            self.export_generator(name)

    def _check_balance(self, phase: str, weights: dict[str, float],
                       logs: dict[str, float]) -> float | None:
        """Warn once (one line, and a ``balance_warning`` record in metrics.jsonl) when one
        weighted loss term pulls far harder than another (:func:`loss_balance`). Returns the
        ratio (None: fewer than two terms)."""
        found = loss_balance(weights, logs)
        if found is None:
            return None
        ratio, message, record = found
        if ratio > BALANCE_RATIO and self.rt.is_main:
            tqdm.write(f"plfw: warning: phase {phase}: {message}", file=sys.stderr)
            self.dir.log({"phase": phase, "step": self.global_step,
                          "balance_warning": f"phase {phase}: {message}", **record})
        return ratio

    def _check_finite(self, what: str) -> None:
        """Stop as diverged when the generator's weights went non-finite: nothing trains from
        there (every later step is skipped), and no model or checkpoint is written from it."""
        tensors = [v for v in self.generator.state_dict().values() if v.is_floating_point()]
        if bool(torch.stack([v.isfinite().all() for v in tensors]).all()):
            return
        latest = self.ckpt.latest()
        raise TrainingDiverged(
            f"training diverged: the generator's weights are non-finite at step "
            f"{self.global_step} ({what}); the last good checkpoint is "
            f"{latest or 'none (none was saved yet)'}; lower the learning rate or set "
            f"train.grad_clip")

    def _start_phase(self, name: str, ps: PhaseSettings, resuming: bool) -> tuple[TrainStep, Any]:
        """Build the phase (restored when resuming), wrap it for DDP, open the batch stream,
        calibrate the losses (a new phase only) and make the phase's one ``TrainStep``."""
        if ps.init and not resuming:
            self._init_generator(ps.init)
        bad_steps = self.stepper.bad_steps if self.stepper is not None else 0
        self.phase = seeded_phase(self.registry, self.cfg, self.phase_index, self.generator,
                                  self.rt, self.output_range, self.train_spec.get("crop"))
        if resuming:
            bad_steps = self._restore(self._resume_state)  # type: ignore[arg-type]
            self._resume_state = None
        sync = self.cfg.train.sync_batchnorm
        self.generator = self.rt.wrap(self.generator, sync)
        if self.phase.discriminator is not None:
            self.phase.discriminator = self.rt.wrap(self.phase.discriminator, sync)
        batches = step_loader(self.train_set, self.cfg.data.batch_size, self.cfg.seed,
                              self.global_step, self.cfg.data.workers, self.rt.rank,
                              self.rt.world_size, self.rt.device.type == "cuda")
        if not resuming and any(hasattr(m, "calibrate") for m in self.phase.losses.values()):
            # the phase's first batch, drawn apart: the training stream itself is not advanced;
            # with calibration_seed, one fixed batch whatever the run's seed
            fixed = ps.calibration_seed is not None
            lr01, hr01 = batch_at(self.train_set, self.cfg.data.batch_size,
                                  ps.calibration_seed if fixed else self.cfg.seed,
                                  0 if fixed else self.global_step)
            lo, hi = self.output_range
            sr = None
            if ps.calibration_sr == "generator":
                module = unwrap(self.generator)
                was_training = module.training
                with torch.no_grad():
                    sr = module.eval()(self.rt.to(lr01)).float()
                module.train(was_training)
            done = calibrate_losses(self.phase, self.rt.to(hr01) * (hi - lo) + lo, sr)
            self.dir.log({"phase": name, "step": self.global_step, "calibration": done})
        self.stepper = TrainStep(self.generator, self.phase, self.rt, self.cfg.train,
                                 self.output_range, self.ema, bad_steps)
        return self.stepper, batches

    def _check_health(self, step: TrainStep) -> None:
        worst = step.check()[1]
        t = self.cfg.train
        if worst >= t.max_bad_steps:
            latest = self.ckpt.latest()
            raise TrainingDiverged(
                f"training diverged by step {self.global_step}: {worst} updates in a row "
                f"had a non-finite loss or a gradient norm above {t.explode_norm:g} (they were "
                f"skipped); the last good checkpoint is {latest or 'none (none was saved yet)'}; "
                f"lower the learning rate or set train.grad_clip")

    def _init_generator(self, source: str) -> None:
        module, _ = load_generator(source, self.registry)
        try:
            unwrap(self.generator).load_state_dict(module.state_dict())
        except RuntimeError as exc:
            raise UserError(f"{source}: its generator does not match this config's generator "
                            f"({str(exc).splitlines()[0]})") from None
        if self.ema is not None:
            self.ema.load_state_dict(module.state_dict())

    # ---------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        """Everything a checkpoint holds to continue bit for bit."""
        p = self.phase
        assert p is not None and self.stepper is not None
        return {
            "config": config_mod.to_dict(self.cfg), "global_step": self.global_step,
            "phase_index": self.phase_index, "phase": p.name, "phase_step": self.phase_step,
            "bad_steps": self.stepper.bad_steps,
            "generator": unwrap(self.generator).state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "discriminator": (unwrap(p.discriminator).state_dict()
                              if p.discriminator is not None else None),
            "opt_g": p.opt_g.state_dict(), "opt_d": p.opt_d.state_dict() if p.opt_d else None,
            "sched_g": p.sched_g.state_dict(),
            "sched_d": p.sched_d.state_dict() if p.sched_d else None,
            "losses": {k: trainable_state(m) for k, m in p.losses.items()},
            "rng": rng_state(),
            **{f"scaler_{k}": sc.state_dict() for k, sc in (("g", p.scaler_g), ("d", p.scaler_d))
               if sc is not None},
        }

    def _restore(self, s: dict[str, Any]) -> int:
        """Load a checkpoint into the freshly built phase; returns its bad-update run."""
        p = self.phase
        assert p is not None
        try:
            unwrap(self.generator).load_state_dict(s["generator"])
            if self.ema is not None and s.get("ema") is not None:
                self.ema.load_state_dict(s["ema"])
            if p.discriminator is not None and s.get("discriminator") is not None:
                p.discriminator.load_state_dict(s["discriminator"])
        except RuntimeError as exc:
            lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
            first = next((x for x in lines[1:] if "size mismatch" in x or "Missing" in x
                          or "Unexpected" in x), lines[0] if lines else "")
            raise UserError(f"{self.run_dir}: the checkpoint does not fit this config's "
                            f"networks ({first[:160]}); the checkpoint was trained with the "
                            f"config it holds: undo the edit to config.yaml, or start a new "
                            f"run with --overwrite or another run_dir") from None
        p.opt_g.load_state_dict(s["opt_g"])
        p.sched_g.load_state_dict(s["sched_g"])
        if p.opt_d is not None:
            p.opt_d.load_state_dict(s["opt_d"])
            p.sched_d.load_state_dict(s["sched_d"])  # type: ignore[union-attr]
        for k, m in p.losses.items():
            m.load_state_dict(s["losses"].get(k, {}), strict=False)
        for key, scaler in (("scaler_g", p.scaler_g), ("scaler_d", p.scaler_d)):
            if scaler is not None and s.get(key):  # fp16; a checkpoint from fp32 starts fresh
                scaler.load_state_dict(s[key])
        set_rng_state(s["rng"])
        return int(s.get("bad_steps", 0))

    def save_checkpoint(self) -> Path | None:
        """Save, or stop as diverged when the weights went non-finite: the latest checkpoint
        stays a good one."""
        self._check_finite("no checkpoint written")  # every rank: they agree
        if not self.rt.is_main:
            return None
        return self.ckpt.save(self.state(), self.global_step)

    def export_generator(self, phase: str) -> Path:
        """models/<phase>.pt: the generator (EMA when on) with the spec to rebuild it."""
        module = self.ema if self.ema is not None else unwrap(self.generator)
        path = self.dir.output_path("models", f"{phase}.pt")
        atomic_torch_save({"format": GENERATOR_FORMAT,
                           "generator": generator_spec(self.registry, self.cfg),
                           "state_dict": module.state_dict(), "phase": phase,
                           "step": self.global_step}, path)
        return path

    # ---------------------------------------------------------------- eval
    def sr_method(self, module: nn.Module | None = None) -> Method:
        """LR (CHW, [0, 1]) -> SR (CHW, [0, 1]) with the EMA generator when there is one."""
        module = module or (self.ema if self.ema is not None else unwrap(self.generator))
        return runner(module, self.output_range, self.rt)

    def validate(self) -> dict[str, float]:
        """Score the current generator with the config's metrics; log them; save crops."""
        if not self.rt.is_main or not self.val_pairs:
            return {}
        result = evaluate(self.sr_method(), self.val_pairs, self.cfg.scale, metrics=self.metrics)
        metrics = {f"val_{k}": result[k] for k in self.metrics}
        phase = self.phase.name if self.phase else "model"
        self.dir.log({"phase": self.phase.name if self.phase else "", "step": self.global_step,
                      **metrics})
        self._event("on_validation_end", step=self.global_step, metrics=metrics)
        if self.progress:  # one line above the progress bar, as the log has it
            tqdm.write(f"plfw: step {self.global_step} ({phase}) validation on "
                       f"{len(self.val_pairs)} image(s): "
                       + ", ".join(f"{k} {result[k]:.4g}" for k in self.metrics), file=sys.stderr)
        crop_grid({"bicubic": bicubic(self.cfg.scale), phase: self.sr_method()},
                  self.val_pairs[: self.cfg.train.sample_images], self.cfg.scale,
                  self.dir.output_path("samples", f"{phase}_step{self.global_step:08d}.png"))
        return metrics

    def score_curve(self) -> None:
        """One learning-curve point: every curve metric on every curve set, per image, into
        curve.jsonl (one record per set)."""
        if not self.rt.is_main:
            return
        if self._curve_pairs is None:
            self._curve_pairs = {name: load_pairs(cs.hr, cs.lr, self.cfg.scale, cs.limit)
                                 for name, cs in self.cfg.curve.sets.items()}
        method = self.sr_method()
        for name, pairs in self._curve_pairs.items():
            started = time.perf_counter()
            result = evaluate(method, pairs, self.cfg.scale, metrics=self.curve_metrics)
            scores = {k: {row["name"]: row[k] for row in result["per_image"]}
                      for k in self.curve_metrics}
            self.dir.log({"phase": self.phase.name if self.phase else "",
                          "step": self.global_step, "set": name, "scores": scores,
                          "seconds": round(time.perf_counter() - started, 2)}, CURVE)

    def summarize(self) -> dict[str, Any]:
        """Score bicubic and each phase's final generator on the validation images."""
        if not self.val_pairs:
            return {}
        methods: dict[str, Method] = {"bicubic": bicubic(self.cfg.scale)}
        for name, ps in self.cfg.phases.items():
            path = self.dir.output_path("models", f"{name}.pt")
            if ps.steps > 0 and path.is_file():
                module, out_range = load_generator(path, self.registry)
                methods[name] = runner(module.to(self.rt.device), out_range, self.rt)
        return write_summary(self.run_dir, methods, self.val_pairs, self.cfg.scale, self.metrics,
                             self.cfg.train.sample_images)

    def _event(self, name: str, **kwargs: Any) -> None:
        """The config's callbacks, by keyword (the one lifecycle mechanism: a run's behaviour
        depends on its config, not on which packages are installed)."""
        if not self.rt.is_main:
            return
        for cb in self.callbacks:
            fn = getattr(cb, name, None)
            if fn is not None:
                fn(trainer=self, **kwargs)

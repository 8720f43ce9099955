"""One training update, shared by ``Trainer`` and ``plfw bench`` so the benchmark times the real
code.

The maths is the paper's alternation (Goodfellow et al.'s k = ``d_updates``): discriminator
update(s) on real HR and on the detached SR batch, each in its own forward pass so batch norm
sees one kind of image per batch, then one generator update with the content losses and the
adversarial loss under the updated discriminator.

Speed without changing that maths:
- The generator runs once; the loss networks see SR with a graph and HR without one.
- bf16 or fp16 autocast (fp32 master weights; fp16 with a loss scaler per optimizer) and
  channels_last come from the ``Runtime``.
- PReLU compiled on its own on the CPU (``plfw.nn.fused``; in phases of ``LONG_PHASE`` steps or
  more under ``compile: auto``): torch's PReLU backward is a sixth of the bf16 MSE step.
- Adam is ``fused`` (one kernel over all parameters on CPU and CUDA).
- No host synchronisation per step: whether an update is healthy (finite loss, finite and not
  exploding gradient norm) is a device tensor handed to fused Adam as ``found_inf``, which skips
  the update, step count included, on the device, the way ``GradScaler`` does. The EMA and the
  logged loss are masked the same way. Runs of bad steps are counted on the device and read by
  ``check()``, which the trainer calls at log intervals: divergence is reported at most
  ``log_every`` steps late, and the weights it would have spoiled were never updated.
  A forward pass in training mode moves batch-norm running statistics (and their counts)
  whatever happens to its update, so the buffers of the generator and the discriminator are
  copied before their forward passes and put back with ``torch.where`` where the update was
  skipped (:class:`BufferGuard`): a skipped step changes no tensor of either network.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from plfw.core.config import TrainSettings
from plfw.device.runtime import LONG_PHASE, Runtime, unwrap
from plfw.nn.fused import compiled_activations
from plfw.training.phase import Phase, ema_losses


def compile_once(module: nn.Module, mode: str = "default") -> None:
    """``torch.compile`` in place (state-dict keys unchanged), once per module."""
    if getattr(module, "_compiled_call_impl", None) is None:
        module.compile(mode=None if mode == "default" else mode)


class BufferGuard:
    """A module's buffers (batch-norm statistics, counts) as they were before a forward pass,
    put back on the device where the update that pass belongs to was skipped: no host sync.
    The buffers are listed once; modules keep their buffer tensors (``load_state_dict`` and
    DDP's broadcast copy into them)."""

    def __init__(self, module: nn.Module | None) -> None:
        self.live = list(unwrap(module).buffers()) if module is not None else []
        self.saved = [b.detach().clone() for b in self.live]

    def save(self) -> None:
        if self.live:
            torch._foreach_copy_(self.saved, self.live)

    def restore_unless(self, healthy: Tensor) -> None:
        for live, saved in zip(self.live, self.saved, strict=True):
            torch.where(healthy, live, saved, out=live)


class TrainStep:
    """The update of one phase: ``step(lr, hr01) -> logs`` (device tensors, no host sync)."""

    def __init__(self, generator: nn.Module, phase: Phase, rt: Runtime, train: TrainSettings,
                 output_range: tuple[float, float], ema: nn.Module | None = None,
                 bad_steps: int = 0) -> None:
        self.generator, self.phase, self.rt, self.ema = generator, phase, rt, ema
        self.output_range = output_range
        self.grad_clip, self.explode_norm = train.grad_clip, train.explode_norm
        self.ema_decay = train.ema
        self.accumulate = train.accumulate
        #: losses that compare with the EMA generator's output (LDL): it runs once per step
        self.ema_losses = set(ema_losses(phase))
        self.g_buffers, self.d_buffers = BufferGuard(generator), BufferGuard(phase.discriminator)
        #: fp16: each optimizer's loss scaler (``Phase.scaler_g`` / ``scaler_d``)
        self.scalers = {id(phase.opt_g): phase.scaler_g, id(phase.opt_d): phase.scaler_d}
        device = rt.device
        #: consecutive bad updates so far, and the longest run since the last ``check``
        self.bad_run = torch.tensor(bad_steps, device=device)
        self.worst_run = self.bad_run.clone()
        for opt in (phase.opt_g, phase.opt_d):  # a restored state dict may carry other flags
            for group in opt.param_groups if opt is not None else ():
                group.update(fused=True, foreach=None)
        if device.type == "cuda" and not torch.are_deterministic_algorithms_enabled():
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest convs once
        #: PReLU compiled on its own (plfw.nn.fused) in this phase's steps
        self.fused = rt.activations == "always" or (
            rt.activations == "long" and phase.settings.steps >= LONG_PHASE)
        if rt.compile:
            for m in (generator, phase.discriminator, *phase.losses.values()):
                if m is not None:
                    compile_once(m, rt.compile_mode)

    def __call__(self, lr: Tensor, hr01: Tensor, measure: bool = False) -> dict[str, Tensor]:
        with compiled_activations(self.fused):
            if self.accumulate > 1:
                return self.step_accumulated(lr, hr01, measure)
            return self.step(lr, hr01, measure)

    def step(self, lr: Tensor, hr01: Tensor, measure: bool = False) -> dict[str, Tensor]:
        """One generator update (after ``d_updates`` discriminator updates in GAN phases).

        With ``measure``, also log ``grad_sr_<label>``: the L2 norm, over the batch, of each
        weighted loss term's gradient with respect to the SR batch — how hard each term pulls
        on the generator's output right now (one extra backward per term, through the loss
        network or discriminator only; the update itself is unchanged)."""
        p, G, D = self.phase, self.generator, self.phase.discriminator
        lo, hi = self.output_range
        hr = hr01 * (hi - lo) + lo
        logs: dict[str, Tensor] = {}
        if self.rt.compile_mode == "reduce-overhead":
            # A new step: CUDA-graph outputs of the previous one may be overwritten now.
            torch.compiler.cudagraph_mark_step_begin()
        self.g_buffers.save()
        with self.rt.autocast():
            sr = G(lr)
        if D is not None:
            adv = p.losses[p.adversarial]  # type: ignore[index]
            D.requires_grad_(True)
            fake = sr.detach()
            for _ in range(p.settings.d_updates):
                self.d_buffers.save()
                with self.rt.autocast():
                    d_loss = adv.discriminator_loss(D(hr), D(fake)).float()
                ok = self.update(p.opt_d, D, d_loss)  # type: ignore[arg-type]
                self.d_buffers.restore_unless(ok)
                logs["loss_d"] = torch.where(ok, d_loss.detach(), 0.0)
            D.requires_grad_(False)
            self.d_buffers.save()  # D's passes in the generator update, undone with it
        total = self.generator_terms(lr, sr, hr, logs, measure)
        ok = self.update(p.opt_g, G, total)
        self.g_buffers.restore_unless(ok)
        if D is not None:
            self.d_buffers.restore_unless(ok)
        logs["loss"] = torch.where(ok, total.detach(), 0.0)
        self.after_update(ok)
        return logs

    def generator_terms(self, lr: Tensor, sr: Tensor, hr: Tensor, logs: dict[str, Tensor],
                        measure: bool) -> Tensor:
        """The weighted sum of the phase's generator losses on ``sr``; each loss's value goes
        to ``logs`` as ``loss_<label>`` and, with ``measure``, its pull as ``grad_sr_<label>``:
        the L2 norm of the weighted term's gradient with respect to ``sr``. The adversarial
        term sees the discriminator as it is now; a loss with ``needs_ema`` gets the EMA
        generator's output for ``lr``."""
        p, D = self.phase, self.phase.discriminator
        total = torch.zeros((), device=lr.device)
        ema_sr = None
        if self.ema_losses and self.ema is not None:
            with torch.no_grad(), self.rt.autocast():
                ema_sr = self.ema(lr)
        with self.rt.autocast():
            for label, loss in p.losses.items():
                if label == p.adversarial:
                    real = None
                    if getattr(loss, "uses_real_in_generator", True):
                        with torch.no_grad():
                            real = D(hr)  # type: ignore[misc]
                    value = loss.generator_loss(real, D(sr))  # type: ignore[misc]
                elif label in self.ema_losses:
                    value = loss(sr, hr, ema_sr=ema_sr)
                else:
                    value = loss(sr, hr)
                value = value.float()
                logs[f"loss_{label}"] = value.detach()
                weighted = p.weights[label] * value
                if measure and weighted.requires_grad:
                    (grad,) = torch.autograd.grad(weighted, sr, retain_graph=True)
                    logs[f"grad_sr_{label}"] = grad.float().norm()
                total = total + weighted
        return total

    def after_update(self, ok: Tensor) -> None:
        """The EMA (unless the update was skipped) and the schedulers, once per update."""
        p = self.phase
        if self.ema is not None:
            self.update_ema(ok)
        p.sched_g.step()
        if p.sched_d is not None:
            p.sched_d.step()

    def step_accumulated(self, lr: Tensor, hr01: Tensor,
                         measure: bool = False) -> dict[str, Tensor]:
        """One update from ``accumulate`` micro-batches of the batch: each runs forward and
        backward on its own (memory of one micro-batch) and their gradients, each scaled by
        1/accumulate, add up to the update's. In GAN phases every micro-batch first adds its
        generator gradient against the discriminator as it was at the start of the update,
        then the discriminator's gradient on that micro-batch; both networks step at the end
        (traiNNer-redux's order; ``accumulate: 1`` keeps the paper's D-then-G order). Batch
        norm sees micro-batches. ``grad_sr_*`` is measured on the first micro-batch."""
        p, G, D = self.phase, self.generator, self.phase.discriminator
        n, (lo, hi) = self.accumulate, self.output_range
        logs: dict[str, Tensor] = {}
        zero = torch.zeros((), device=lr.device)
        total, d_total = zero.clone(), zero.clone()
        self.g_buffers.save()
        self.d_buffers.save()
        p.opt_g.zero_grad(set_to_none=True)
        if D is not None:
            D.requires_grad_(False)  # the generator's losses add no gradient to D
            p.opt_d.zero_grad(set_to_none=True)  # type: ignore[union-attr]
        for i, (lr_i, hr01_i) in enumerate(zip(lr.chunk(n), hr01.chunk(n), strict=True)):
            hr = hr01_i * (hi - lo) + lo
            with self.rt.autocast():
                sr = G(lr_i)
            terms: dict[str, Tensor] = {}
            part = self.generator_terms(lr_i, sr, hr, terms, measure and i == 0)
            for key, value in terms.items():  # losses averaged over the micro-batches
                logs[key] = value if key.startswith("grad_sr_") else (
                    logs.get(key, zero) + value / n)
            self.scaled(p.opt_g, part / n).backward()
            total = total + part.detach() / n
            if D is not None:
                adv = p.losses[p.adversarial]  # type: ignore[index]
                D.requires_grad_(True)
                with self.rt.autocast():
                    d_loss = adv.discriminator_loss(D(hr), D(sr.detach())).float()
                self.scaled(p.opt_d, d_loss / n).backward()  # type: ignore[arg-type]
                D.requires_grad_(False)
                d_total = d_total + d_loss.detach() / n
        if D is not None:
            ok_d = self.finish(p.opt_d, D, d_total)  # type: ignore[arg-type]
            self.d_buffers.restore_unless(ok_d)
            logs["loss_d"] = torch.where(ok_d, d_total, 0.0)
        ok = self.finish(p.opt_g, G, total)
        self.g_buffers.restore_unless(ok)
        logs["loss"] = torch.where(ok, total, 0.0)
        self.after_update(ok)
        return logs

    def update(self, opt: torch.optim.Optimizer, module: nn.Module, loss: Tensor) -> Tensor:
        """Backward + step, skipped on the device when the loss or gradient norm is non-finite
        or above ``explode_norm``. Returns the 0-d bool 'healthy' tensor."""
        opt.zero_grad(set_to_none=True)
        self.scaled(opt, loss).backward()
        return self.finish(opt, module, loss)

    def scaled(self, opt: torch.optim.Optimizer, loss: Tensor) -> Tensor:
        """``loss`` times ``opt``'s fp16 loss scale (unchanged without one): small fp16
        gradients then stay above fp16's underflow."""
        scaler = self.scalers.get(id(opt))
        return scaler.scale(loss) if scaler is not None else loss

    def finish(self, opt: torch.optim.Optimizer, module: nn.Module, loss: Tensor) -> Tensor:
        """The step of ``opt`` with the gradients ``module`` holds, skipped on the device when
        ``loss`` or their norm is non-finite or above ``explode_norm``; 'healthy' (0-d bool).
        In fp16 the gradients are unscaled first, so the norm, the clip and ``explode_norm``
        see true gradients; an overflow of the scaled gradients (finite loss, non-finite norm)
        skips the update and halves the scale without counting as a bad update."""
        scaler = self.scalers.get(id(opt))
        if scaler is not None:
            scaler.unscale_(opt)
        grads = [q.grad for q in module.parameters() if q.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads, foreach=True)
        healthy = torch.isfinite(loss) & torch.isfinite(norm) & (norm <= self.explode_norm)
        if self.grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(
                [q for q in module.parameters() if q.grad is not None], self.grad_clip, norm,
                foreach=True)
        opt.found_inf = (~healthy).float()  # type: ignore[attr-defined]
        opt.step()
        if scaler is not None:
            scaler.update()  # from the overflow flag unscale_ left on the device: no sync
        run = (self.bad_run + 1) * (~healthy)
        if scaler is not None:  # an overflow neither extends nor ends a run of bad updates
            run = torch.where(torch.isfinite(loss) & ~torch.isfinite(norm), self.bad_run, run)
        self.bad_run = run
        self.worst_run = torch.maximum(self.worst_run, self.bad_run)
        return healthy

    @torch.no_grad()
    def update_ema(self, healthy: Tensor) -> None:
        """EMA of the weights; batch-norm buffers are copied (they are not averaged) so the
        EMA model's normalisation matches. A skipped update leaves the EMA as it was."""
        assert self.ema is not None
        src = unwrap(self.generator)
        weight = healthy.float() * (1.0 - self.ema_decay)
        for e, q in zip(self.ema.parameters(), src.parameters(), strict=True):
            e.lerp_(q.detach(), weight)
        for e, b in zip(self.ema.buffers(), src.buffers(), strict=True):
            e.copy_(torch.where(healthy, b, e))

    @property
    def bad_steps(self) -> int:
        """The current run of bad updates (one host sync): what a checkpoint stores."""
        return int(self.bad_run)

    def check(self) -> tuple[int, int]:
        """(current run of bad updates, longest run since the last check): one host sync."""
        current, worst = (int(v) for v in torch.stack([self.bad_run, self.worst_run]).tolist())
        self.worst_run = self.bad_run.clone()
        return current, worst


#: a weighted loss term this many times larger or smaller than another is reported
BALANCE_RATIO = 1e4


def loss_balance(weights: dict[str, float], logs: dict[str, float]
                 ) -> tuple[float, str, dict[str, Any]] | None:
    """How much harder the strongest weighted loss term pulls than the weakest: by the norm of
    its gradient with respect to the SR image (``grad_sr_<term>``) where the step measured it,
    else by its weighted value. Returns (ratio, a sentence naming both, the log record's
    fields), or None with fewer than two terms."""
    by = "grad_sr"
    sizes = {k: abs(logs[f"grad_sr_{k}"]) for k in weights if f"grad_sr_{k}" in logs}
    if len(sizes) < 2:
        by = "weighted loss"
        sizes = {k: abs(w * logs[f"loss_{k}"]) for k, w in weights.items()
                 if f"loss_{k}" in logs}
    sizes = {k: v for k, v in sizes.items() if math.isfinite(v) and v > 0}
    if len(sizes) < 2:
        return None
    big, small = max(sizes, key=sizes.__getitem__), min(sizes, key=sizes.__getitem__)
    ratio = sizes[big] / sizes[small]
    message = (f"loss term '{big}' pulls {ratio:.3g} times harder than '{small}' ({by}: "
               + ", ".join(f"{k} {v:.3g}" for k, v in sizes.items())
               + "); check their weights (and a perceptual loss's feature_scale)")
    return ratio, message, {"balance_ratio": ratio, "balance_by": by, "balance_terms": sizes}

"""Optimisers and schedules of a phase: Adam (the paper), AdamW, step decay, warm-up, cosine."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import REGISTRY, tiny_config

from plfw.core.config import PhaseSettings, load_config
from plfw.core.errors import UserError
from plfw.trainer import Trainer
from plfw.training.phase import LrFactor, make_optimizer, make_schedule


def _lrs(ps: PhaseSettings, n: int) -> list[float]:
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(1))], ps.lr, ps)
    sched = make_schedule(opt, ps, ps.lr)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_then_cosine_to_min_lr() -> None:
    ps = PhaseSettings(steps=10, lr=1.0, schedule="cosine", warmup=4, min_lr=0.1)
    lrs = _lrs(ps, 11)
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    # after warm-up: 0.1 + 0.9 * (1 + cos(pi * t)) / 2 over the remaining 6 steps
    for k in range(4, 11):
        t = min((k - 4) / 6, 1.0)
        assert lrs[k] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))
    assert lrs[10] == pytest.approx(0.1)


def test_step_decay_is_the_papers_multisteplr_with_or_without_warmup() -> None:
    plain = PhaseSettings(steps=10, lr=1.0, milestones=[3, 6], gamma=0.5)
    assert _lrs(plain, 8) == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25])
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(1))], 1.0, plain)
    assert isinstance(make_schedule(opt, plain, 1.0), torch.optim.lr_scheduler.MultiStepLR)
    warm = PhaseSettings(steps=10, lr=1.0, milestones=[3], gamma=0.5, warmup=2)
    assert _lrs(warm, 5) == pytest.approx([0.5, 1, 1, 0.5, 0.5])
    assert LrFactor(warm, 1.0).__dict__ == {"warmup": 2, "steps": 10, "schedule": "step",
                                            "milestones": [3], "gamma": 0.5, "floor": 0.0}


def test_adamw_decays_weights_adam_does_not() -> None:
    for name, decay, expect in (("adam", 0.0, 1.0), ("adamw", 0.5, 1.0 - 0.1 * 0.5)):
        w = torch.nn.Parameter(torch.ones(1))
        ps = PhaseSettings(steps=1, lr=0.1, optimizer=name, weight_decay=decay)
        opt = make_optimizer([w], 0.1, ps)
        w.grad = torch.zeros(1)
        opt.step()
        assert float(w.detach()) == pytest.approx(expect), name


def test_resume_is_exact_with_adamw_warmup_and_cosine(tmp_path: Path) -> None:
    extra = ["phases.srresnet.optimizer=adamw", "phases.srresnet.weight_decay=0.01",
             "phases.srresnet.schedule=cosine", "phases.srresnet.warmup=2",
             "phases.srgan.schedule=cosine", "phases.srgan.warmup=1", "phases.srgan.min_lr=1e-5"]
    full = load_config(tiny_config(tmp_path / "a"), extra)
    Trainer(full, REGISTRY, progress=False).fit()
    part = tiny_config(tmp_path / "b")
    Trainer(load_config(part, [*extra, "train.keep_last=10"]), REGISTRY, progress=False).fit()
    run = Path(load_config(part, extra).run_dir)
    for step in (5, 6):  # as if killed after step 4, inside the GAN phase's cosine
        (run / "checkpoints" / f"step_{step:08d}.pt").unlink()
    (run / "models" / "srgan.pt").unlink()
    resumed = load_config(part, [*extra, "train.keep_last=10"])
    Trainer(resumed, REGISTRY, resume=True, progress=False).fit()
    for phase in ("srresnet", "srgan"):
        a = torch.load(Path(full.run_dir) / "models" / f"{phase}.pt", weights_only=True)
        b = torch.load(Path(resumed.run_dir) / "models" / f"{phase}.pt", weights_only=True)
        for k, v in a["state_dict"].items():
            assert torch.equal(v, b["state_dict"][k]), (phase, k)


@pytest.mark.parametrize(("override", "message"), [
    ("phases.srresnet.optimizer=sgd", "adam or adamw"),
    ("phases.srresnet.weight_decay=0.1", "set optimizer: adamw"),
    ("phases.srresnet.schedule=poly", "step or cosine"),
    ("phases.srresnet.warmup=-1", "warmup"),
])
def test_bad_optimisation_settings(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_config(tiny_config(tmp_path), [override])

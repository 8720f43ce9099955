"""fp16 training with a gradient scaler (``train.precision: fp16``).

fp16 is for CUDA; it runs on the CPU too (slowly on most CPUs), which is how these tests check
the scaler's logic without a GPU: the loss is scaled, the gradients unscaled before the health
check and clipping, an overflow skips the update without counting as divergence, and the
scaler's state is checkpointed so a resumed run continues bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import REGISTRY, tiny_config

from plfw.assembly import bench_step
from plfw.core.config import load_config
from plfw.core.errors import UserError
from plfw.device.runtime import make_runtime
from plfw.storage.checkpoint import CheckpointDir, load_checkpoint
from plfw.trainer import Trainer


def _weights(run: Path, phase: str) -> dict[str, torch.Tensor]:
    return torch.load(run / "models" / f"{phase}.pt", weights_only=True)["state_dict"]


def test_precision_fp16_is_a_runtime_of_its_own() -> None:
    rt = make_runtime("cpu", "fp16", "false", "false")
    assert (rt.fp16, rt.bf16, rt.precision) == (True, False, "fp16")
    assert make_runtime("cpu", "bf16", "false", "false").precision == "bf16"
    assert make_runtime("cpu", "fp32", "false", "false").precision == "fp32"
    with pytest.raises(UserError, match="fp16"):
        make_runtime("cpu", "half", "false", "false")


def test_fp16_step_scales_the_loss_and_updates(tmp_path: Path) -> None:
    cfg = load_config(tiny_config(tmp_path))
    rt = make_runtime("cpu", "fp16", "false", "false")
    step, call = bench_step(REGISTRY, cfg, "srgan", rt, batch=2, crop=16)
    assert step.phase.scaler_g is not None and step.phase.scaler_d is not None
    before = {k: v.clone() for k, v in step.generator.state_dict().items()}
    logs = call()
    assert torch.isfinite(logs["loss"]) and float(logs["loss"]) > 0
    # the logged loss is the unscaled one: the same order as an fp32 step's
    fp32_step, fp32_call = bench_step(REGISTRY, cfg, "srgan", make_runtime("cpu", "fp32",
                                                                           "false", "false"),
                                      batch=2, crop=16)
    ratio = float(logs["loss"]) / float(fp32_call()["loss"])
    assert 0.5 < ratio < 2.0
    after = step.generator.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert step.check() == (0, 0)


def test_overflow_skips_the_update_lowers_the_scale_and_is_not_divergence(
        tmp_path: Path) -> None:
    cfg = load_config(tiny_config(tmp_path, gan=False))
    rt = make_runtime("cpu", "fp16", "false", "false")
    step, call = bench_step(REGISTRY, cfg, "srresnet", rt, batch=2, crop=16)
    scaler = step.phase.scaler_g
    # a scale no fp16 gradient survives: every gradient overflows to inf
    scaler.load_state_dict({**scaler.state_dict(), "scale": 2.0 ** 40})
    before = {k: v.clone() for k, v in step.generator.state_dict().items()}
    logs = call()
    assert float(logs["loss"]) == 0.0  # skipped, as a bad update is
    after = step.generator.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert scaler.get_scale() == 2.0 ** 39
    assert step.check() == (0, 0)  # an overflow of the scale is not a bad update
    for _ in range(40):  # the scale comes down until the gradients fit, then it trains
        call()
    assert scaler.get_scale() < 2.0 ** 30
    assert any(not torch.equal(before[k], step.generator.state_dict()[k]) for k in before)


def test_fp16_resume_is_exact_and_the_checkpoint_holds_the_scalers(tmp_path: Path) -> None:
    over = ["train.precision=fp16"]
    full = load_config(tiny_config(tmp_path / "a"), over)
    Trainer(full, REGISTRY, progress=False).fit()
    part = tiny_config(tmp_path / "b")
    Trainer(load_config(part, [*over, "phases.srgan.steps=1"]), REGISTRY, progress=False).fit()
    latest = CheckpointDir(tmp_path / "b" / "run" / "checkpoints").latest()
    state = load_checkpoint(latest)
    assert state["scaler_g"]["scale"] > 0 and state["scaler_d"]["scale"] > 0
    resumed = load_config(part, over)
    Trainer(resumed, REGISTRY, resume=True, progress=False).fit()
    for phase in ("srresnet", "srgan"):
        a, b = _weights(Path(full.run_dir), phase), _weights(Path(resumed.run_dir), phase)
        assert all(torch.equal(a[k], b[k]) for k in a), phase


def test_fp16_with_accumulation_trains(tmp_path: Path) -> None:
    cfg = load_config(tiny_config(tmp_path), ["train.precision=fp16", "train.accumulate=2",
                                                "data.batch_size=4"])
    summary = Trainer(cfg, REGISTRY, progress=False).fit()
    assert all(torch.isfinite(v).all() for v in _weights(Path(cfg.run_dir), "srgan").values())
    assert 0 < summary["srgan"]["psnr_y"] < 100

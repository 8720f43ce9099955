"""Gradient accumulation (``train.accumulate``): the same update as the whole batch where the
maths allows it (no batch norm), both networks stepping in GAN phases, and bad values refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import REGISTRY, tiny_config

from plfw.assembly import bench_step
from plfw.core.config import load_config
from plfw.core.errors import UserError
from plfw.device.runtime import make_runtime
from plfw.trainer import Trainer


def one_update(tmp_path: Path, phase: str, accumulate: int, gan: bool) -> dict:
    cfg = load_config(tiny_config(tmp_path, gan=gan), [
        "generator.batch_norm=false", f"train.accumulate={accumulate}", "data.batch_size=4",
        "train.compile=false"])
    step, call = bench_step(REGISTRY, cfg, phase, make_runtime("cpu", "fp32", "false"), 4, 16)
    logs = call()
    return {"g": {k: v.clone() for k, v in step.generator.state_dict().items()},
            "d": (None if step.phase.discriminator is None else
                  [q.clone() for q in step.phase.discriminator.parameters()]),
            "loss": float(logs["loss"]), "loss_d": float(logs.get("loss_d", -1))}


def test_accumulated_micro_batches_make_the_whole_batchs_update(tmp_path: Path) -> None:
    whole = one_update(tmp_path / "a", "srresnet", 1, gan=False)
    parts = one_update(tmp_path / "b", "srresnet", 2, gan=False)
    assert parts["loss"] == pytest.approx(whole["loss"], rel=1e-5)
    for key, value in whole["g"].items():
        torch.testing.assert_close(parts["g"][key], value, rtol=1e-4, atol=1e-6)


def test_a_gan_phase_steps_both_networks_with_accumulation(tmp_path: Path) -> None:
    torch.manual_seed(0)
    before = one_update(tmp_path / "a", "srgan", 1, gan=True)
    after = one_update(tmp_path / "b", "srgan", 2, gan=True)
    assert after["loss_d"] > 0 and after["loss"] > 0
    # the same start (same seed) and a different order of updates: D moved in both, differently
    assert any(not torch.equal(a, b) for a, b in zip(before["d"], after["d"], strict=True))


def test_accumulation_trains_and_bad_values_are_refused(tmp_path: Path) -> None:
    path = tiny_config(tmp_path)
    Trainer(load_config(path, ["train.accumulate=2", "data.batch_size=4"]), REGISTRY,
            progress=False).fit()
    assert (tmp_path / "run" / "models" / "srgan.pt").is_file()
    with pytest.raises(UserError, match="divisor of data.batch_size"):
        load_config(path, ["train.accumulate=3"])
    with pytest.raises(UserError, match="d_updates: 1 only"):
        load_config(path, ["train.accumulate=2", "phases.srgan.d_updates=2"])

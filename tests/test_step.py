"""The shared training step: a bad update is skipped on the device, exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import REGISTRY, tiny_config

from plfw.assembly import bench_step
from plfw.core.config import load_config
from plfw.core.errors import UserError
from plfw.device.runtime import make_runtime


def test_non_finite_update_is_skipped_without_touching_weights_or_adam(tmp_path: Path) -> None:
    cfg = load_config(tiny_config(tmp_path, gan=False), ["train.ema=0.5"])
    rt = make_runtime("cpu", "fp32", "false", "false")
    step, call = bench_step(REGISTRY, cfg, "srresnet", rt, batch=2, crop=16)
    call()
    weights = {k: v.clone() for k, v in step.generator.state_dict().items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    ema = {k: v.clone() for k, v in step.ema.state_dict().items()}
    opt = step.phase.opt_g
    adam = [{k: v.clone() for k, v in s.items()} for s in opt.state.values()]
    lr = torch.rand(2, 3, 4, 4)
    logs = step(lr, torch.full((2, 3, 16, 16), float("nan")))
    assert float(logs["loss"]) == 0.0 and not torch.isfinite(logs["loss_pixel"])
    after = step.generator.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in weights.items())
    assert all(torch.equal(v, step.ema.state_dict()[k]) for k, v in ema.items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert all(torch.equal(v, s[k]) for old, s in zip(adam, opt.state.values(), strict=True)
               for k, v in old.items())
    assert step.check() == (1, 1)
    call()  # a healthy step ends the run of bad ones (which stays the longest until read)
    assert step.check() == (0, 1)
    assert step.check() == (0, 0)


def test_compile_setting_defaults_to_cuda_only() -> None:
    assert make_runtime("cpu", "fp32", "false").compile is False
    assert make_runtime("cpu", "fp32", "false", "true").compile is True
    graphs = make_runtime("cpu", "fp32", "false", "reduce-overhead")
    assert graphs.compile is True and graphs.compile_mode == "reduce-overhead"
    with pytest.raises(UserError, match="reduce-overhead"):
        make_runtime("cpu", "fp32", "false", "fastest")

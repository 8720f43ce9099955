"""Built-in callbacks: TensorBoard scalars from a real (tiny) run."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import REGISTRY, tiny_config

from plfw.core.config import load_config
from plfw.trainer import Trainer


def test_tensorboard_callback_writes_losses_and_metrics(tmp_path: Path) -> None:
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator")
    cfg = load_config(tiny_config(tmp_path, gan=False), ["callbacks=[tensorboard]"])
    Trainer(cfg, REGISTRY, progress=False).fit()
    folder = Path(cfg.run_dir) / "tensorboard"
    acc = event_accumulator.EventAccumulator(str(folder))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/loss_pixel", "val/psnr_y", "val/ssim_y"} <= tags
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3]

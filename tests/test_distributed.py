"""Multi-process training with torchrun (gloo on the CPU) on the same engine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_config

from plfw.config import load_config
from plfw.errors import UserError
from plfw.trainer import Trainer

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _run(cmd: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


def _weights(run: Path, phase: str) -> dict[str, torch.Tensor]:
    return torch.load(run / "models" / f"{phase}.pt", weights_only=True)["state_dict"]


def test_two_processes_match_one_process_with_the_doubled_batch(tmp_path: Path) -> None:
    """Without batch norm the maths is identical: DDP averages the per-rank mean losses' gradients,
    which is the gradient of the mean over the doubled batch (same images: each rank takes its
    half of one global batch). Only float summation order differs, hence the tolerance."""
    cfg = tiny_config(tmp_path, gan=False)
    common = ["--quiet", "generator.batch_norm=false", "phases.srresnet.steps=4",
              "train.val_every=1000", "train.threads=1"]
    _run([sys.executable, "-m", "plfw", "train", str(cfg), *common, "data.batch_size=4",
          f"run_dir={tmp_path / 'one'}"])
    _run([*TORCHRUN, "-m", "plfw", "train", str(cfg), *common, "data.batch_size=2",
          f"run_dir={tmp_path / 'two'}"])
    one, two = _weights(tmp_path / "one", "srresnet"), _weights(tmp_path / "two", "srresnet")
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-5, rtol=1e-4), key
    # only rank 0 writes: one metrics line per step, one set of checkpoints
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert sum('"loss"' in x for x in lines) == 4


def test_gan_phase_trains_under_torchrun(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, gan=True)
    _run([*TORCHRUN, "-m", "plfw", "train", str(cfg), "--quiet", "phases.srresnet.steps=1",
          "phases.srgan.steps=2", "train.threads=1", f"run_dir={tmp_path / 'run'}"])
    assert (tmp_path / "run" / "models" / "srgan.pt").is_file()


def test_sync_batchnorm_on_the_cpu_is_a_clear_error(tmp_path: Path) -> None:
    cfg = load_config(tiny_config(tmp_path, gan=False), ["train.sync_batchnorm=true"])
    with pytest.raises(UserError, match="needs CUDA"):
        Trainer(cfg, progress=False)

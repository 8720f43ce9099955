"""Multi-process training with torchrun (gloo on the CPU) on the same engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REGISTRY, tiny_config

from plfw.core.config import load_config
from plfw.core.errors import UserError
from plfw.trainer import Trainer

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _run(cmd: list[str], **env: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", **env}
    # its own session, so a hung group (torchrun and every rank) is killed as a whole
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        raise AssertionError(f"timed out: {err[-3000:]}") from None
    assert proc.returncode == 0, err[-3000:]
    return err


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
        Trainer(cfg, REGISTRY, progress=False)


# Loaded as a plugin module (PLFW_PLUGINS) by every rank; it has no hooks of its own: rank 1 of
# the first attempt dies (as a process does when OOM-killed or its node fails) in step 5, after
# its gradients were reduced and before its update; torchrun's restarts get no such hook.
DIE_ONCE = """
import os
if os.environ.get("RANK") == "1" and os.environ.get("TORCHELASTIC_RESTART_COUNT") == "0":
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    _steps = [0]

    def _die(optimizer, args, kwargs):
        _steps[0] += 1
        if _steps[0] == 5:
            os._exit(17)

    register_optimizer_step_pre_hook(_die)
"""


@pytest.mark.slow
def test_a_dead_rank_is_restarted_by_torchrun_and_the_run_resumes_by_itself(
        tmp_path: Path) -> None:
    """torchrun --max-restarts restarts every rank after one dies; plfw sees the restart, all
    ranks resume from rank 0's latest checkpoint (step 4), and the run ends on exactly the
    weights of an uninterrupted one."""
    cfg = tiny_config(tmp_path, gan=False)
    common = ["--quiet", "phases.srresnet.steps=8", "train.checkpoint_every=2",
              "train.val_every=1000", "train.threads=1", "train.keep_last=10"]
    _run([*TORCHRUN, "-m", "plfw", "train", str(cfg), *common, f"run_dir={tmp_path / 'ref'}"])
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "plfw_die_once.py").write_text(DIE_ONCE)
    path = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH", "")) if p)
    err = _run([*TORCHRUN[:3], "--max-restarts=1", *TORCHRUN[3:], "-m", "plfw", "train",
                str(cfg), *common, f"run_dir={tmp_path / 'restarted'}"], PYTHONPATH=path,
               PLFW_PLUGINS="plfw_die_once")
    assert "restarted by torchrun (restart 1): resuming from step 4" in err, err[-3000:]
    a, b = _weights(tmp_path / "ref", "srresnet"), _weights(tmp_path / "restarted", "srresnet")
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(x)["step"] for x in (tmp_path / "restarted" / "metrics.jsonl")
             .read_text().splitlines() if '"loss"' in x]
    assert steps == list(range(1, 9))  # steps 5.. logged once, by the attempt that kept them

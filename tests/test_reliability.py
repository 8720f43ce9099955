"""Faults long runs meet: a full disk, two processes in one run directory, skipped steps that
must change nothing. (A rank dying under torchrun: tests/test_distributed.py; hostile MOS
requests: tests/test_mos.py; YAML alias bombs: tests/test_yaml_limits.py.)

A full disk is simulated at the operating system's door: ``os.write`` answers ENOSPC for files
under one folder (plfw's writers all end in ``os.write``), and, where this machine lets root
mount one, on a real size-limited tmpfs.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REGISTRY, fill_disk, tiny_config
from PIL import Image

from plfw.assembly import bench_step
from plfw.cli import main
from plfw.core.config import load_config, to_yaml
from plfw.core.errors import DiskFull, UserError
from plfw.device.runtime import make_runtime, unwrap
from plfw.inference.export import export_generator
from plfw.storage.checkpoint import CheckpointDir, atomic_write_bytes
from plfw.storage.locks import LOCK_FILE, FolderBusy, FolderLock
from plfw.studies.ablation import load_ablation
from plfw.training.rundir import CURVE, LOG, RunDir, Start

ENV = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}


def _weights(run: Path, phase: str) -> dict[str, torch.Tensor]:
    return torch.load(run / "models" / f"{phase}.pt", weights_only=True)["state_dict"]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


def _disk_full_under(monkeypatch: pytest.MonkeyPatch, folder: Path,
                     when: Callable[[str], bool] = lambda target: True) -> None:
    """``os.write`` fails with ENOSPC for files under ``folder`` whose path passes ``when``."""
    real_write, root = os.write, str(folder.resolve())

    def write(fd: int, data: bytes) -> int:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.startswith(root) and when(target):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)


# --- a full disk ----------------------------------------------------------------------------


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The run stops with one line naming the folder; step 1 stays the latest; no temporary
    file is left; after space is freed, --resume ends on the weights of an uninterrupted run."""
    ref = tiny_config(tmp_path / "ref", gan=False)
    assert main(["train", str(ref), "--quiet"]) == 0
    cfg = tiny_config(tmp_path / "full", gan=False)
    ckpts = tmp_path / "full" / "run" / "checkpoints"

    def later_steps(target: str) -> bool:
        match = re.search(r"/\.step_(\d+)\.pt\.", target)
        return match is not None and int(match.group(1)) >= 2

    _disk_full_under(monkeypatch, ckpts, later_steps)
    assert main(["train", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(ckpts) in err and "no space left" in err
    assert "stays step_00000001.pt" in err and "--resume" in err
    assert CheckpointDir(ckpts).latest() == ckpts / "step_00000001.pt"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step_00000001.pt"]
    monkeypatch.undo()  # space freed
    assert main(["train", str(cfg), "--quiet", "--resume"]) == 0
    a, b = _weights(tmp_path / "ref" / "run", "srresnet"), _weights(ckpts.parent, "srresnet")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_full_disk_while_pointing_latest_drops_the_new_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpts = CheckpointDir(tmp_path / "ck", keep_last=5)
    ckpts.save({"w": torch.zeros(3)}, 1)
    _disk_full_under(monkeypatch, tmp_path / "ck", lambda t: "/.latest." in t)
    with pytest.raises(DiskFull, match="stays step_00000001.pt"):
        ckpts.save({"w": torch.ones(3)}, 2)
    assert ckpts.latest() == ckpts.path(1) and ckpts.steps() == [1]
    assert not _leftovers(tmp_path)


def test_full_disk_leaves_the_metrics_log_whole(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    run = RunDir(tmp_path / "run", 2)
    run.prepare(Start(False, False), "seed: 1\n")
    run.log({"step": 1, "loss": 0.5})
    before = (tmp_path / "run" / LOG).read_bytes()
    _disk_full_under(monkeypatch, tmp_path / "run")
    with pytest.raises(DiskFull, match=f"{tmp_path / 'run'}: no space left"):
        run.log({"step": 2, "loss": 0.25})
    assert (tmp_path / "run" / LOG).read_bytes() == before


def test_full_disk_during_export_leaves_no_file(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _disk_full_under(monkeypatch, tmp_path / "out")
    target = tmp_path / "out" / "srresnet.safetensors"
    with pytest.raises(UserError) as info:
        export_generator("srresnet", "safetensors", REGISTRY, target)
    assert str(tmp_path / "out") in str(info.value) and "\n" not in str(info.value)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_real_full_filesystem(small_disk: Path) -> None:
    """Checkpoint, export, upscale and a MOS rating on a tmpfs that runs out of space."""
    ckpts = CheckpointDir(small_disk / "checkpoints")
    ckpts.save({"w": torch.zeros(1000)}, 1)
    image = small_disk / "in.png"
    Image.fromarray(np.full((8, 8, 3), 120, np.uint8)).save(image)
    filler = fill_disk(small_disk)

    with pytest.raises(DiskFull) as info:
        ckpts.save({"w": torch.zeros(100_000)}, 2)
    assert str(small_disk / "checkpoints") in str(info.value)
    assert ckpts.latest() == ckpts.path(1) and ckpts.steps() == [1]
    with pytest.raises(DiskFull):
        atomic_write_bytes(small_disk / "x.bin", b"1" * 100_000)
    with pytest.raises(DiskFull):
        export_generator("srresnet", "safetensors", REGISTRY, small_disk / "m.safetensors")
    from plfw.inference.upscale import upscale_files

    with pytest.raises(DiskFull, match=str(small_disk / "up")):
        upscale_files([str(image)], small_disk / "up", REGISTRY, model="srresnet", progress=False)
    assert sorted(p.name for p in small_disk.rglob("*")) == [
        "checkpoints", "filler", "in.png", "latest", "step_00000001.pt", "up"]
    assert not list((small_disk / "up").iterdir())
    filler.unlink()
    assert ckpts.save({"w": torch.zeros(100_000)}, 2) == ckpts.path(2)


# --- one process per run directory ---------------------------------------------------------


def test_lock_is_exclusive_across_processes_and_reentrant_within_one(tmp_path: Path) -> None:
    code = ("import sys, time; from plfw.storage.locks import FolderLock; "
            "FolderLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusy, match=f"{tmp_path} is in use .*pid {holder.pid}"):
            FolderLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        holder.stdout.close()
    with FolderLock(tmp_path) as outer, FolderLock(tmp_path):  # the kernel released it
        assert outer.held
    assert FolderLock(tmp_path).acquire().held


def test_second_train_is_refused_and_a_sigkilled_one_leaves_no_lock(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, gan=False)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "plfw", "train", str(cfg), "--quiet"]
    first = subprocess.Popen([*cmd, "phases.srresnet.steps=100000"], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        ckpts = CheckpointDir(run / "checkpoints")
        while (ckpts.latest() is None or not (run / LOCK_FILE).is_file()
               or (run / LOCK_FILE).read_text().strip() != str(first.pid)):
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        second = subprocess.run([*cmd, "--resume"], env=ENV, capture_output=True, text=True,
                                timeout=120)
        assert second.returncode == 2
        err = second.stderr.strip()
        assert "\n" not in err and f"{run} is in use" in err and f"pid {first.pid}" in err
        assert first.poll() is None  # the first one never noticed
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    step = int(CheckpointDir(run / "checkpoints").latest().stem.split("_")[1])
    third = subprocess.run([*cmd, "--resume", f"phases.srresnet.steps={step + 2}"], env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr[-2000:]
    assert CheckpointDir(run / "checkpoints").steps()[-1] == step + 2


def test_second_ablate_on_the_same_jobs_is_refused(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A job whose run directory another process holds (as a running `plfw ablate` does for
    every job it was asked to train) is refused before anything is trained; once that process
    is SIGKILLed the same command trains."""
    tiny_config(tmp_path)
    (tmp_path / "grid.yaml").write_text(
        "base: tiny.yaml\noverrides: [phases.srresnet.steps=1, phases.srgan=null, "
        "train.threads=1]\nseeds: [0]\nruns: {mse: []}\n")
    job = tmp_path / "out" / "mse" / "seed0"
    code = ("import sys, time; from plfw.storage.locks import FolderLock; "
            "FolderLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(job)], stdout=subprocess.PIPE,
                              text=True)
    args = ["ablate", str(tmp_path / "grid.yaml"), "--out", str(tmp_path / "out"),
            "--no-report", "--quiet"]
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("plfw: error: ") and f"{job} is in use" in err[-1]
        assert not (job / "checkpoints").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        holder.stdout.close()
    assert main(args) == 0
    assert (job / "models" / "srresnet.pt").is_file()


# --- a skipped step changes nothing ---------------------------------------------------------


def _tensors(step) -> dict[str, torch.Tensor]:
    nets = {"g": unwrap(step.generator), "d": unwrap(step.phase.discriminator)}
    out = {f"{n}.{k}": v.detach().clone() for n, m in nets.items()
           for k, v in m.state_dict().items()}
    for name, opt in (("opt_g", step.phase.opt_g), ("opt_d", step.phase.opt_d)):
        for i, state in enumerate(opt.state.values()):
            out.update({f"{name}.{i}.{k}": v.clone() for k, v in state.items()})
    return out


def test_a_step_skipped_as_non_finite_changes_no_tensor(tmp_path: Path) -> None:
    """A NaN batch: the generator's and the discriminator's parameters, batch-norm running
    statistics, num_batches_tracked and Adam states are bit-identical afterwards."""
    cfg = load_config(tiny_config(tmp_path), ["train.ema=0.9"])
    rt = make_runtime("cpu", "fp32", "false", "false")
    step, healthy = bench_step(REGISTRY, cfg, "srgan", rt, batch=2, crop=16)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in step.generator.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in step.phase.discriminator.modules())
    healthy()  # Adam has state and the statistics have moved once
    before, ema = _tensors(step), {k: v.clone() for k, v in step.ema.state_dict().items()}
    lr = torch.full((2, 3, 4, 4), float("nan"))
    hr = torch.rand(2, 3, 16, 16)
    step(lr, hr)
    after = _tensors(step)
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, changed
    assert all(torch.equal(ema[k], v) for k, v in step.ema.state_dict().items())
    assert step.check()[0] >= 1  # counted as bad
    healthy()  # a healthy step after it moves the statistics again
    moved = _tensors(step)
    counts = [k for k in before if k.endswith("num_batches_tracked")]
    assert counts and all(int(moved[k]) == int(before[k]) + 1 for k in counts
                          if k.startswith("g."))
    assert all(int(moved[k]) > int(before[k]) for k in counts)


# --- a power loss: torn logs and checkpoints (issue 36) -------------------------------------


def _steps(run: Path, name: str = LOG) -> list[int]:
    return [json.loads(line)["step"] for line in (run / name).read_text().splitlines()
            if "loss" in json.loads(line) or "set" in json.loads(line)]


def test_a_torn_last_log_line_is_dropped_on_resume(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A power loss in the middle of a metrics.jsonl / curve.jsonl line used to make every
    `plfw resume` fail with a JSONDecodeError; the line is dropped with one warning naming the
    file and the log reads as one uninterrupted run."""
    cfg = tiny_config(tmp_path, gan=False)
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--quiet", "phases.srresnet.steps=2"]) == 0
    with open(run / LOG, "a") as fh:
        fh.write('{"time": 1.0, "phase": "srresnet", "step": 3, "loss_pix')
    (run / CURVE).write_text('{"step": 1, "set": "a", "scores": {}}\n{"step": 2, "se')
    capsys.readouterr()
    assert main(["resume", str(run), "--quiet", "phases.srresnet.steps=3"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == [f"plfw: warning: {run / LOG}: dropped 1 unreadable line (cut short by "
                        f"a power loss or a full disk?)",
                        f"plfw: warning: {run / CURVE}: dropped 1 unreadable line (cut short "
                        f"by a power loss or a full disk?)"]
    assert _steps(run) == [1, 2, 3] and _steps(run, CURVE) == [1]


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The newest checkpoint cut in half (a real truncated file): resume warns in one line,
    sets it aside and continues from the one before (keep_last: 2), ending on the weights of an
    uninterrupted run. With no earlier checkpoint it is one error line, not a traceback."""
    ref = tiny_config(tmp_path / "ref", gan=False)
    assert main(["train", str(ref), "--quiet", "phases.srresnet.steps=4"]) == 0
    cfg = tiny_config(tmp_path / "cut", gan=False)
    run = tmp_path / "cut" / "run"
    assert main(["train", str(cfg), "--quiet"]) == 0
    ckpts = CheckpointDir(run / "checkpoints")
    latest = ckpts.latest()
    assert latest == ckpts.path(3) and ckpts.steps() == [2, 3]
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    capsys.readouterr()
    assert main(["resume", str(run), "--quiet", "phases.srresnet.steps=4"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(err) == 1 and err[0].startswith(f"plfw: warning: {latest}: not a readable "
                                               f"checkpoint")
    assert err[0].endswith("set aside as step_00000003.pt.unreadable, resuming from "
                           "step_00000002.pt")
    assert (run / "checkpoints" / "step_00000003.pt.unreadable").is_file()
    assert ckpts.steps() == [3, 4] and _steps(run) == [1, 2, 3, 4]
    a, b = _weights(tmp_path / "ref" / "run", "srresnet"), _weights(run, "srresnet")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # keep_last: 1 and its only checkpoint torn: one line, exit 2
    one = tiny_config(tmp_path / "one", gan=False)
    assert main(["train", str(one), "--quiet", "train.keep_last=1"]) == 0
    only = CheckpointDir(tmp_path / "one" / "run" / "checkpoints").latest()
    only.write_bytes(only.read_bytes()[:100])
    capsys.readouterr()
    assert main(["resume", str(tmp_path / "one" / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "no earlier checkpoint is left" in err[0]
    assert err[1].startswith("plfw: error: ") and "no checkpoint to resume from" in err[1]


# --- an existing folder is never taken over (issue 36) --------------------------------------


def test_an_ablation_job_restarts_its_own_folder_and_leaves_others_alone(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`plfw ablate` starts a job over only in its own folder (a job killed before its first
    checkpoint: its config.yaml, a stale log); a user's folder at the job's path (own files, or
    another run with checkpoints) is refused in one line and left exactly as it was."""
    tiny_config(tmp_path)
    (tmp_path / "grid.yaml").write_text(
        "base: tiny.yaml\noverrides: [phases.srresnet.steps=1, phases.srgan=null, "
        "train.threads=1]\nseeds: [0]\nruns: {mse: []}\n")
    args = ["ablate", str(tmp_path / "grid.yaml"), "--out", str(tmp_path / "out"),
            "--no-report", "--quiet"]
    job = load_ablation(tmp_path / "grid.yaml", tmp_path / "out").jobs[0]
    # killed before its first checkpoint: what the Trainer had written by then
    RunDir(job.run_dir, 1).prepare(Start(False, False), to_yaml(job.config))
    (job.run_dir / LOG).write_text('{"step": 7, "loss": 9.0}\n')
    (job.run_dir / "notes.txt").write_text("mine")  # a file of the user's, kept
    assert main(args) == 0
    assert _steps(job.run_dir) == [1] and (job.run_dir / "notes.txt").read_text() == "mine"
    assert (job.run_dir / "models" / "srresnet.pt").is_file()

    def files(folder: Path) -> dict[str, bytes]:
        return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    shutil.rmtree(tmp_path / "out")
    user = job.run_dir / "models" / "srresnet.pt"
    user.parent.mkdir(parents=True)
    user.write_bytes(b"a model of the user's")
    before = files(tmp_path / "out")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{job.run_dir} is not empty (it holds models/)" in err
    assert files(tmp_path / "out") == before  # (the lock plfw took is gone again)

    shutil.rmtree(tmp_path / "out")  # another run, with checkpoints, where the job would go
    assert main(["train", str(tmp_path / "tiny.yaml"), "--quiet", "seed=11",
                 "phases.srgan=null", f"run_dir={job.run_dir}"]) == 0
    before = files(tmp_path / "out")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{job.run_dir} holds a run that is not this ablation job's" in err
    assert files(tmp_path / "out") == before

"""The training loop: phases, exact resume, divergence handling, EMA, run directory rules."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REGISTRY, tiny_config

from plfw.core.config import load_config
from plfw.core.errors import UserError
from plfw.storage.checkpoint import CheckpointDir, load_checkpoint
from plfw.trainer import Trainer, TrainingDiverged
from plfw.training.rundir import RunDir
from plfw.training.sampling import StepBatches


def _weights(run: Path, phase: str) -> dict[str, torch.Tensor]:
    return torch.load(run / "models" / f"{phase}.pt", weights_only=True)["state_dict"]


def test_two_phases_write_the_run_directory(tmp_path: Path) -> None:
    cfg = load_config(tiny_config(tmp_path))
    summary = Trainer(cfg, REGISTRY, progress=False).fit()
    run = Path(cfg.run_dir)
    assert set(summary) == {"bicubic", "srresnet", "srgan"}
    assert all(0 < summary[m]["psnr_y"] < 100 for m in summary)
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "summary.md", "summary.png",
                 "models/srresnet.pt", "models/srgan.pt"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]
    gan = [r for r in records if r.get("phase") == "srgan" and "loss_d" in r]
    assert gan and all(k in gan[0] for k in ("loss_content", "loss_adversarial"))
    assert any("val_psnr_y" in r for r in records)
    # keep_last=2: only the newest two numbered checkpoints remain
    assert CheckpointDir(run / "checkpoints").steps() == [5, 6]


def test_resume_is_exact(tmp_path: Path) -> None:
    full = load_config(tiny_config(tmp_path / "a"))
    Trainer(full, REGISTRY, progress=False).fit()

    part = tiny_config(tmp_path / "b")
    # stop after step 4 (inside the GAN phase), as a crash would
    cfg = load_config(part, ["phases.srgan.steps=1"])
    Trainer(cfg, REGISTRY, progress=False).fit()
    resumed = load_config(part)
    Trainer(resumed, REGISTRY, resume=True, progress=False).fit()

    for phase in ("srresnet", "srgan"):
        a, b = _weights(Path(full.run_dir), phase), _weights(Path(resumed.run_dir), phase)
        for key in a:
            assert torch.equal(a[key], b[key]), (phase, key)


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_matches(tmp_path: Path) -> None:
    """Kill the real CLI process with SIGKILL several times; resuming each time must end on the
    same weights as an uninterrupted run (CPU, fp32, deterministic: bit-equal)."""
    ref_cfg = tiny_config(tmp_path / "ref", gan=True)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, "-m", "plfw", "train", str(ref_cfg), "--quiet",
           "phases.srresnet.steps=12", "phases.srgan.steps=12"]
    subprocess.run(cmd, check=True, env=env, capture_output=True)

    cfg = tiny_config(tmp_path / "kill", gan=True)
    cmd = [sys.executable, "-m", "plfw", "train", str(cfg), "--quiet",
           "phases.srresnet.steps=12", "phases.srgan.steps=12"]
    rng = random.Random(7)
    kills = 0
    ckpts = CheckpointDir(tmp_path / "kill" / "run" / "checkpoints")
    while kills < 4:
        args = cmd + (["--resume"] if ckpts.latest() else [])
        seen = ckpts.latest()
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while ckpts.latest() == seen and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # wait until this process has made progress...
        time.sleep(rng.uniform(0.0, 1.5))  # ...then kill it at a random point
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    assert kills >= 2, "training finished before it could be interrupted twice"
    final = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr[-2000:]
    for phase in ("srresnet", "srgan"):
        a = _weights(tmp_path / "ref" / "run", phase)
        b = _weights(tmp_path / "kill" / "run", phase)
        assert all(torch.equal(a[k], b[k]) for k in a), phase


def test_existing_run_is_not_overwritten(tmp_path: Path) -> None:
    path = tiny_config(tmp_path, gan=False)
    Trainer(load_config(path), REGISTRY, progress=False).fit()
    with pytest.raises(UserError, match="--resume"):
        Trainer(load_config(path), REGISTRY, progress=False)
    Trainer(load_config(path), REGISTRY, overwrite=True, progress=False).fit()


def test_unwritable_run_dir_fails_before_training(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    path = tiny_config(tmp_path, gan=False)
    with pytest.raises(UserError, match="not writable"):
        Trainer(load_config(path, [f"run_dir={blocker}/run"]), REGISTRY, progress=False)


def test_divergence_stops_with_last_good_checkpoint(tmp_path: Path) -> None:
    path = tiny_config(tmp_path, gan=False)
    # three healthy steps, then the learning rate jumps by 1e32 and the weights blow up
    cfg = load_config(path, ["phases.srresnet.steps=20", "phases.srresnet.milestones=[3]",
                             "phases.srresnet.gamma=1e32", "train.max_bad_steps=3"])
    trainer = Trainer(cfg, REGISTRY, progress=False)
    with pytest.raises(TrainingDiverged, match="diverged"):
        trainer.fit()
    latest = CheckpointDir(Path(cfg.run_dir) / "checkpoints").latest()
    assert latest is not None
    state = load_checkpoint(latest)
    assert all(torch.isfinite(v).all() for v in state["generator"].values()
               if v.is_floating_point())


def test_ema_tracks_weights_and_copies_batch_norm_buffers(tmp_path: Path) -> None:
    cfg = load_config(tiny_config(tmp_path, gan=False), ["train.ema=0.5"])
    trainer = Trainer(cfg, REGISTRY, progress=False)
    trainer.fit()
    ema, live = trainer.ema.state_dict(), trainer.generator.state_dict()
    means = [k for k in ema if k.endswith("running_mean")]
    assert means and all(torch.equal(ema[k], live[k]) for k in means)
    weights = [k for k in ema if k.endswith("weight") and ema[k].dim() == 4]
    assert any(not torch.equal(ema[k], live[k]) for k in weights)


def test_step_batches_split_one_global_batch_across_ranks() -> None:
    single = StepBatches(10, 4, seed=1, start=0).for_step(5)
    halves = [StepBatches(10, 2, 1, 0, rank=r, world=2).for_step(5) for r in range(2)]
    assert halves[0] + halves[1] == single
    assert len({i for i, _ in single}) == 4  # distinct images within a batch
    assert StepBatches(3, 4, 1, 0).for_step(0)  # fewer images than the batch still works


def test_adversarial_loss_needs_a_discriminator(tmp_path: Path) -> None:
    path = tiny_config(tmp_path)
    cfg = load_config(path, ["phases.srgan.discriminator=null"])
    with pytest.raises(UserError, match="discriminator"):
        Trainer(cfg, REGISTRY, progress=False).fit()


def test_validation_and_summary_use_the_configured_metrics(tmp_path: Path) -> None:
    cfg = load_config(tiny_config(tmp_path, gan=False), ["metrics=[{name: psnr_y, border: 2}]"])
    summary = Trainer(cfg, REGISTRY, progress=False).fit()
    assert set(summary["bicubic"]) == {"psnr_y", "per_image"}
    log = (Path(cfg.run_dir) / "metrics.jsonl").read_text()
    records = [json.loads(x) for x in log.splitlines()]
    val = [r for r in records if any(k.startswith("val_") for k in r)]
    assert val and all("val_ssim_y" not in r for r in val)
    assert "SSIM" not in (Path(cfg.run_dir) / "summary.md").read_text()


# ------------------------------------------------------------------ issue 36


def test_a_phase_name_is_checked_again_where_files_are_written(tmp_path: Path) -> None:
    """A Config built in code (not through build_config) with a phase named '../x' is refused
    by the Trainer before anything is written; RunDir.output_path refuses any name that would
    land outside its folder."""
    cfg = load_config(tiny_config(tmp_path, gan=False))
    for bad in ("../x", str(tmp_path / "victim")):
        cfg.phases = {bad: next(iter(cfg.phases.values()))}
        with pytest.raises(UserError, match="is not allowed"):
            Trainer(cfg, REGISTRY, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml", "train", "val"]
    run = RunDir(tmp_path / "run", 2)
    assert run.output_path("models", "srgan.pt") == tmp_path / "run" / "models" / "srgan.pt"
    for bad in ("../x.pt", "/abs/victim.pt", "..", "a/b.pt", "", "x\0.pt"):
        with pytest.raises(UserError, match="outside"):
            run.output_path("models", bad)


def test_a_folder_holding_anything_is_not_overwritten(tmp_path: Path) -> None:
    """Only an empty or new folder starts a run without --resume / --overwrite: a finished run
    whose checkpoints/ was deleted, plfw's files of any kind, or a user's own file are refused,
    naming the folder; nothing in it changes. --overwrite still replaces the run."""
    path = tiny_config(tmp_path, gan=False)
    run = tmp_path / "run"
    Trainer(load_config(path), REGISTRY, progress=False).fit()
    shutil.rmtree(run / "checkpoints")  # deleted to save space
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match=f"{run} is not empty .*models/.*--overwrite"):
        Trainer(load_config(path), REGISTRY, progress=False)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    for name in ("config.yaml", "metrics.jsonl", "curve.jsonl", "summary.md", "samples/a.png",
                 "notes.txt"):
        folder = tmp_path / "holds" / name.replace("/", "_")
        (folder / name).parent.mkdir(parents=True)
        (folder / name).write_text("mine")
        with pytest.raises(UserError, match=f"{folder} is not empty"):
            Trainer(load_config(path, [f"run_dir={folder}"]), REGISTRY, progress=False)
        assert (folder / name).read_text() == "mine" and len(list(folder.rglob("*"))) == (
            2 + (name == "samples/a.png"))  # the file and plfw's lock
    empty = tmp_path / "empty"
    empty.mkdir()
    Trainer(load_config(path, [f"run_dir={empty}", "phases.srresnet.steps=1"]), REGISTRY,
            progress=False).fit()
    Trainer(load_config(path), REGISTRY, overwrite=True, progress=False).fit()
    assert CheckpointDir(run / "checkpoints").steps() == [2, 3]


def test_a_bad_later_phase_fails_before_the_first_step(tmp_path: Path) -> None:
    """A bad tap in the GAN phase used to be reported after the SRResNet phase had trained;
    every phase is built once before training, so nothing is trained or written."""
    cfg = load_config(tiny_config(tmp_path), ["phases.srgan.losses.content.layers={relu9_9: 1.0}"])
    with pytest.raises(UserError, match="unknown tap 'relu9_9'"):
        Trainer(cfg, REGISTRY, progress=False)
    assert not (tmp_path / "run").exists()


def test_building_every_phase_up_front_changes_no_random_draw(tmp_path: Path) -> None:
    """The up-front build (discriminator init, random loss networks) runs on forked RNGs."""
    trainer = Trainer(load_config(tiny_config(tmp_path)), REGISTRY, progress=False)
    torch_state, py_state = torch.get_rng_state(), random.getstate()
    trainer.check_phases()
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == py_state


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_unbalanced_loss_terms_warn_once_at_the_first_logged_step(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A content term pulling ~1e6 times harder on the SR image than the adversarial one (the
    old feature_scale 1.0 with Caffe VGG: 5e4 against 0.01) gets one warning line, and one
    balance_warning record, by grad_sr; balanced terms get none."""
    path = tiny_config(tmp_path)
    cfg = load_config(path, ["phases.srgan.losses.content.weight=1e9"])
    trainer = Trainer(cfg, REGISTRY, progress=False)
    trainer.fit()
    err = [line for line in capsys.readouterr().err.splitlines() if "pulls" in line]
    assert len(err) == 1 and err[0].startswith("plfw: warning: phase srgan: loss term "
                                               "'content' pulls ")
    assert "'adversarial' (grad_sr: content " in err[0]
    warned = [r for r in _records(Path(cfg.run_dir)) if "balance_warning" in r]
    assert len(warned) == 1 and warned[0]["phase"] == "srgan" and warned[0]["step"] == 4
    assert warned[0]["balance_by"] == "grad_sr" and warned[0]["balance_ratio"] > 1e4
    assert set(warned[0]["balance_terms"]) == {"content", "adversarial"}
    # a step that did not measure grad_sr (a phase shorter than log_every): weighted values
    ratio = trainer._check_balance("x", {"a": 1.0, "b": 2.0}, {"loss_a": 1e5, "loss_b": 1e-2})
    assert ratio == pytest.approx(5e6) and "(weighted loss: a 1e+05, b 0.02)" in (
        capsys.readouterr().err)
    assert trainer._check_balance("x", {"a": 1.0}, {"loss_a": 1e5, "grad_sr_a": 1.0}) is None
    Trainer(load_config(path, ["run_dir=" + str(tmp_path / "ok")]), REGISTRY, progress=False).fit()
    assert not [r for r in _records(tmp_path / "ok") if "balance_warning" in r]
    assert "pulls" not in capsys.readouterr().err


def test_resume_after_an_architecture_edit_is_one_line(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from plfw.cli import main

    cfg = load_config(tiny_config(tmp_path), ["phases.srgan=null", "phases.srresnet.steps=2"])
    Trainer(cfg, REGISTRY, progress=False).fit()
    run = Path(cfg.run_dir)
    text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(text.replace("channels: 8", "channels: 16"))
    (run / "models" / "srresnet.pt").unlink()  # as if interrupted before the export
    assert main(["resume", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit this config" in err[0] and "size mismatch" in err[0]


def test_each_validation_prints_one_line(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Validation scores reach the terminal while training (they were only in metrics.jsonl):
    one line per validation, step, phase and metrics; none with progress off (--quiet)."""
    path = tiny_config(tmp_path, gan=False)
    Trainer(load_config(path, ["train.val_every=2", "phases.srresnet.steps=4"]), REGISTRY).fit()
    lines = [line for line in capsys.readouterr().err.splitlines() if "validation" in line]
    assert len(lines) == 2, lines
    for line, step in zip(lines, (2, 4), strict=True):
        assert line.startswith(f"plfw: step {step} (srresnet) validation on 2 image(s): "
                               f"psnr_y "), line
        assert ", ssim_y 0." in line and "\r" not in line
    logged = [r for r in _records(tmp_path / "run") if "val_psnr_y" in r]
    assert f"psnr_y {logged[0]['val_psnr_y']:.4g}," in lines[0]
    Trainer(load_config(path, ["run_dir=" + str(tmp_path / "quiet")]), REGISTRY,
            progress=False).fit()
    assert "validation" not in capsys.readouterr().err


def test_deterministic_is_each_runs_own(tmp_path: Path) -> None:
    """``train.deterministic`` holds for the run that asks for it, not for every later run in
    the process (a study trains many jobs in one process)."""
    was = torch.are_deterministic_algorithms_enabled()
    try:
        Trainer(load_config(tiny_config(tmp_path / "a")), REGISTRY, progress=False)
        assert torch.are_deterministic_algorithms_enabled()
        cfg = load_config(tiny_config(tmp_path / "b"), ["train.deterministic=false"])
        Trainer(cfg, REGISTRY, progress=False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(was)

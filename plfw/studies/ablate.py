"""``plfw ablate``: train and score every job of an ablation file, then write the comparison
report.

Each job trains with the ordinary :class:`plfw.trainer.Trainer` in its own directory and can be
interrupted at any point: finished jobs are skipped, interrupted ones resume from their latest
checkpoint, and ``ablate.json`` in the job's directory keeps its state and training time.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from plfw.core import config as config_mod
from plfw.core.config_files import read_yaml
from plfw.core.errors import UserError, suggest
from plfw.core.registry import Registry
from plfw.device.probe import machine
from plfw.storage.checkpoint import CheckpointDir, atomic_write_bytes
from plfw.storage.locks import FolderLock
from plfw.studies.ablation import STATE_FILE, Ablation, Job, job_overrides, load_ablation
from plfw.studies.job_files import read_state, write_state
from plfw.studies.scores import Inputs, load_inputs, score

#: Settings that change how a run executes, not what it learns: they may differ between the
#: invocations that train and resume one run.
RUNTIME_KEYS = {"train": ("device", "threads", "compile", "log_every", "val_every",
                          "checkpoint_every", "keep_last", "sample_images"),
                "data": ("workers",)}


def _learned(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that decides what a run learns (not where it lives).

    A config saved by an older plfw is read through today's schema first, so a setting added
    since then counts at its default (which keeps the old behaviour) instead of as a change."""
    try:
        config = config_mod.to_dict(config_mod.build_config(config))
    except (UserError, TypeError, ValueError):
        pass  # not a config this plfw can read: compared as written, so it differs
    out = {k: v for k, v in config.items() if k not in ("run_dir", "name", "curve")}
    for section, keys in RUNTIME_KEYS.items():
        if isinstance(out.get(section), dict):
            out[section] = {k: v for k, v in out[section].items() if k not in keys}
    return out


def _code_version() -> str:
    """plfw's version and, in a git checkout, its commit: which code trained (part of) a job."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    try:
        release = version("plfw")
    except PackageNotFoundError:
        release = "?"
    return f"plfw {release}" + (f" ({commit})" if commit else "")


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt  # so the elapsed time is saved on `kill` as on Ctrl-C


def _wrote_config(run_dir: Path, resolved: dict[str, Any]) -> bool:
    """Whether ``run_dir/config.yaml`` is this job's (what it learns), i.e. the folder is the
    job's own, left by a run killed before it wrote ablate.json."""
    path = run_dir / "config.yaml"
    try:
        return path.is_file() and _learned(read_yaml(path)) == _learned(resolved)
    except UserError:
        return False


def train_job(ab: Ablation, job: Job, registry: Registry, log: Any = print,
              progress: bool = False) -> str:
    """Train one job unless it finished; resume it when it has a checkpoint.

    Returns ``"skipped"``, ``"resumed"`` or ``"trained"``. The wall time spent training is
    added to ``ablate.json`` in the job's directory even when interrupted."""
    from plfw.trainer import Trainer

    cfg, run_dir = job.config, job.run_dir
    state = read_state(run_dir)
    resolved = json.loads(json.dumps(config_mod.to_dict(cfg)))
    if _learned(state.get("config", resolved)) != _learned(resolved):
        raise UserError(f"{run_dir}: the config of run '{job.label}' changed since it was "
                        f"trained; delete that folder to retrain it, or rename the run")
    if state.get("finished"):
        log(f"plfw ablate: {job.label}: finished earlier, skipped")
        return "skipped"
    resume = CheckpointDir(run_dir / "checkpoints", cfg.train.keep_last).latest() is not None
    # Only this job's own folder (its ablate.json, or the config.yaml it wrote before a kill)
    # is resumed or started over; a folder holding anything else is left to the Trainer, which
    # refuses it unless it is empty: an ablation never replaces a user's files.
    ours = bool(state) or _wrote_config(run_dir, resolved)
    if resume and not ours:
        raise UserError(f"{run_dir} holds a run that is not this ablation job's (no "
                        f"{STATE_FILE}, a different config.yaml); move it away or choose "
                        f"another --out")
    if not resume:
        state = {}
    state.update(overrides=job_overrides(ab, job.run, job.point), config=resolved,
                 finished=False, run=job.run, seed=job.seed,
                 point={k: v for k, v in job.point})
    state.setdefault("train_seconds", 0.0)
    state.setdefault("code", []).append(_code_version())  # one entry per invocation
    log(f"plfw ablate: {job.label}: {'resuming' if resume else 'training'} in {run_dir}")
    started, trainer = time.perf_counter(), None
    try:
        trainer = Trainer(cfg, registry, resume=resume, overwrite=not resume and ours,
                          progress=progress)
        trainer.fit()
        state["finished"] = True
    finally:
        seconds = time.perf_counter() - started
        state["train_seconds"] += seconds
        # and where: a job's time depends on the CPU kind (and the threads the trainer set)
        state.setdefault("sessions", []).append({"machine": machine(), "train_seconds": seconds})
        if trainer is not None and run_dir.is_dir():  # a folder the Trainer refused stays
            write_state(run_dir, state)
    return "resumed" if resume else "trained"


def _add_score_time(job: Job, seconds: float) -> None:
    state = read_state(job.run_dir)
    if state:
        state["score_seconds"] = state.get("score_seconds", 0.0) + seconds
        write_state(job.run_dir, state)


def pack_job(job: Job) -> Path | None:
    """Keep only a finished job's final generator, as fp16 safetensors (spec in the metadata,
    loaded back into fp32 weights) with its score-cache key beside it (``<file>.key``), and
    drop its checkpoints and other phases' models.
    Returns the packed file (None when the job is not finished)."""
    import shutil

    from safetensors.torch import save

    from plfw.inference.generators import GENERATOR_FORMAT
    from plfw.studies.job_files import KEY_SUFFIX, PACKED, finished_model, model_key

    model = finished_model(job)
    if model is None:
        return None
    if model.name.endswith(PACKED):
        key = model.with_name(model.name + KEY_SUFFIX)
        if not key.is_file():  # packed before key files existed
            atomic_write_bytes(key, (model_key(model) + "\n").encode())
        return model
    import torch

    saved = torch.load(model, map_location="cpu", weights_only=True)
    tensors = {k: (v.half() if v.is_floating_point() else v).detach().contiguous().clone()
               for k, v in saved["state_dict"].items()}
    packed = model.with_name(model.name[: -len(".pt")] + PACKED)
    atomic_write_bytes(packed, save(tensors, metadata={
        "format": GENERATOR_FORMAT, "generator": json.dumps(saved["generator"]),
        "step": str(saved.get("step", "")), "stored_as": "fp16 (trained in fp32)"}))
    atomic_write_bytes(packed.with_name(packed.name + KEY_SUFFIX),
                       (model_key(packed) + "\n").encode())
    for other in (job.run_dir / "models").glob("*.pt"):
        other.unlink()
    shutil.rmtree(job.run_dir / "checkpoints", ignore_errors=True)
    return packed


def run_ablation(path: str | Path, registry: Registry, out: str | Path | None = None,
                 overrides: list[str] | None = None, only: list[str] | None = None,
                 report_only: bool = False, progress: bool = False, log: Any = print,
                 eval_hr: str | None = None, eval_lr: str | None = None,
                 device: str | None = None, report: bool = True,
                 seeds: list[int] | None = None, curves_only: bool = False,
                 metrics: list[str] | None = None) -> Path | None:
    """Train (or skip/resume) and score every job, then write the report over all finished ones
    (``curves_only``: only the learning and loss curves of the jobs so far, from their logs).

    ``eval_hr`` / ``eval_lr``: other images to judge on, with only ``metrics`` if given (a
    check on sets the study does not ship). While training, every job is scored on them too as
    it finishes, so the check outlives generators the study does not keep; the report on them
    goes to ``<out>/report_<set>/``. With ``report_only`` only that report is written."""
    ab = load_ablation(path, Path(out) if out is not None else None, overrides)
    if not eval_hr and (eval_lr or metrics):
        raise UserError(f"{'--lr' if eval_lr else '--metrics'} needs --hr (the folder of HR "
                        f"images it belongs to)")
    other = ab.judged_on(eval_hr, eval_lr, metrics) if eval_hr else None
    jobs = ab.jobs
    if only:
        unknown = [n for n in only if n not in ab.runs]
        if unknown:
            raise UserError(f"--run {unknown[0]}: no such run in {ab.path}"
                            f"{suggest(unknown[0], ab.runs)}")
        jobs = [j for j in jobs if j.run in only]
    if seeds:
        known = sorted({j.seed for j in ab.jobs if j.seed is not None})
        unknown = [s for s in seeds if s not in known]
        if unknown:
            raise UserError(f"--seed {unknown[0]}: {ab.path} has seeds {known or 'none'}")
        jobs = [j for j in jobs if j.seed in seeds]
    if curves_only:  # from the logs of the jobs so far; nothing trains or is scored
        from plfw.studies.report import write_curves

        written = write_curves(ab, ab.out)
        if not written:
            raise UserError(f"{ab.out}: no job has logged anything yet")
        for path in written:
            log(f"plfw ablate: wrote {path}")
        return written[0]
    if not report_only:
        previous = signal.signal(signal.SIGTERM, _terminate)
        # every selected job's run directory is locked up front, so a second `plfw ablate` on
        # the same jobs is refused at once (other --seed / --run selections may run alongside)
        locks = [FolderLock(job.run_dir, "run directory") for job in jobs]
        inputs: Inputs | None = None  # pairs and metrics, loaded at the first finished job
        other_inputs: Inputs | None = None
        try:
            for lock in locks:
                lock.acquire()
            for index, job in enumerate(jobs, 1):
                log(f"plfw ablate: job {index}/{len(jobs)}")
                done = train_job(ab, job, registry, log=log, progress=progress)
                if ab.spec.artefacts == "final_fp16":
                    pack_job(job)
                # scored as it finishes (a no-op once cached): its scores are committed with
                # it and outlive a generator the study does not keep or a disk that is lost
                started = time.perf_counter()
                inputs = inputs or load_inputs(ab, registry)
                score(ab, registry, device=device or ab.spec.eval.device, log=log, only=job,
                      inputs=inputs)
                if other is not None:
                    other_inputs = other_inputs or load_inputs(other, registry)
                    score(other, registry, device=device or ab.spec.eval.device, log=log,
                          only=job, inputs=other_inputs)
                if done != "skipped":  # the study's compute: training and scoring together
                    _add_score_time(job, time.perf_counter() - started)
        finally:
            for lock in locks:
                lock.release()
            signal.signal(signal.SIGTERM, previous)
    if not report:
        return None
    from plfw.studies.report import write_report

    views = [v for v in (None if report_only and other else ab, other) if v is not None]
    first = None
    for view in views:
        folder = ab.out / f"report_{next(iter(view.sets))}" if view is other else None
        written = write_report(view, registry, device=device or ab.spec.eval.device, log=log,
                               report_dir=folder)
        log(f"plfw ablate: report written to {written}")
        first = first or written
    return first

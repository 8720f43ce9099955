"""The run directory's rules: a new run starts only in an empty or new folder (anything else is
continued with ``--resume`` or replaced with ``--overwrite``), nothing is written outside it,
one process at a time (a lock the kernel drops when its holder dies), fail early when it is not
writable, and a metrics log (``metrics.jsonl``) that reads as one uninterrupted run, even after
a full disk or a power loss."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plfw.core.errors import DiskFull, UserError, is_disk_full
from plfw.device.runtime import Runtime, elastic_restart
from plfw.storage.checkpoint import (
    CheckpointDir,
    UnreadableCheckpoint,
    atomic_write_bytes,
    checkpoint_step,
    load_checkpoint,
)
from plfw.storage.locks import LOCK_FILE, FolderLock

LOG = "metrics.jsonl"
CURVE = "curve.jsonl"  # learning-curve scores (plfw.core.config.CurveSettings)
_PROBE = ".plfw-write-test"
#: entries of a folder that do not make it "hold something": plfw's own lock and write probe
_IGNORED = frozenset({LOCK_FILE, _PROBE})


def read_log(run_dir: Path, name: str = LOG) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl (or ``name``, e.g. curve.jsonl); a line cut short
    by a kill is skipped."""
    path = Path(run_dir) / name
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


@dataclass(frozen=True)
class Start:
    """How a run begins, decided once before anything is built (:meth:`RunDir.start`): from
    the checkpoint ``state`` (loaded; the same step on every rank) when ``resume``, else new
    (``overwrite`` clears an old run's files first)."""

    resume: bool
    overwrite: bool
    state: dict[str, Any] | None = None


class RunDir:
    """``path`` with its checkpoints; only the main process (``main``) writes."""

    def __init__(self, path: str | Path, keep_last: int, main: bool = True) -> None:
        self.path, self.main = Path(path), main
        self.ckpt = CheckpointDir(self.path / "checkpoints", keep_last)
        self.lock = FolderLock(self.path, "run directory")

    def start(self, rt: Runtime, resume: bool, overwrite: bool) -> Start:
        """Where this run begins. Resuming continues from rank 0's newest readable checkpoint
        (:meth:`newest_readable`) on every rank; a new run passes :meth:`check_start`. After a
        torchrun restart (a rank died) the run continues by itself from that checkpoint, or
        starts over without one."""
        agreed, restarts, found = -1, elastic_restart(), None
        if resume or restarts:
            if self.main and self.path.is_dir():
                self.lock.acquire()  # before looking at (and maybe setting aside) checkpoints
            found = self.newest_readable() if self.main else None
            agreed = rt.rank0_int(checkpoint_step(found[0]) if found else -1)
        if restarts:
            resume, overwrite = agreed >= 0, agreed < 0
            if self.main:
                print(f"plfw: restarted by torchrun (restart {restarts}): "
                      + (f"resuming from step {agreed}" if resume else "starting over"),
                      file=sys.stderr, flush=True)
        if resume and agreed < 0:
            raise UserError(f"{self.ckpt.folder}: no checkpoint to resume from; start without "
                            f"--resume" + (" but with --overwrite (the folder holds files)"
                                           if self.contents() else ""))
        self.check_start(resume, overwrite, rt)
        if not resume:
            return Start(False, overwrite)
        state = found[1] if found else load_checkpoint(self.ckpt.path(agreed))  # other ranks
        return Start(True, overwrite, state)

    def contents(self) -> list[str]:
        """What the folder holds besides plfw's lock (folders end in '/'); [] when it is empty
        or does not exist."""
        if not self.path.is_dir():
            return []
        return sorted(p.name + ("/" if p.is_dir() else "") for p in self.path.iterdir()
                      if p.name not in _IGNORED)

    def check_start(self, resume: bool, overwrite: bool, rt: Runtime | None = None) -> None:
        """An existing run is continued only with ``resume``, replaced only with ``overwrite``;
        a new run starts without either only in an empty or new folder (one holding plfw's
        files — models, logs, a config, samples, summaries — or anything else of the user's is
        refused, naming what it holds); a run directory another process works in is refused
        (its lock is taken here). Rank 0 looks; every rank gets its answer (``rt``)."""
        if self.main and self.path.is_dir():
            self.lock.acquire()
        if resume or overwrite:
            return
        held = self.contents() if self.main else []
        if self.ckpt.latest() is not None:
            raise UserError(f"{self.path} already holds a run; continue it with --resume, "
                            f"start over with --overwrite, or set run_dir=...")
        occupied = bool(held) if rt is None else bool(rt.rank0_int(int(bool(held))))
        if occupied:
            shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
            raise UserError(f"{self.path} is not empty (it holds {shown or 'files'}); a new run "
                            f"starts only in an empty or new folder: set run_dir=... to one, "
                            f"continue a run there with --resume, or replace plfw's files "
                            f"there with --overwrite")

    def output_path(self, folder: str, name: str) -> Path:
        """``<run>/<folder>/<name>`` for a file plfw writes (``models/<phase>.pt``,
        ``samples/<phase>_stepN.png``), refusing a name that would put it anywhere else (a
        second guard behind the phase-name check of :func:`plfw.core.config.check_phase_name`)."""
        base = os.path.normpath(os.path.join(self.path, folder))
        target = os.path.normpath(os.path.join(base, name))
        if (not name or name in (".", "..") or "\0" in name or os.sep in name
                or (os.altsep and os.altsep in name) or os.path.dirname(target) != base):
            raise UserError(f"refused to write {name!r}: the file would land outside "
                            f"{base}; rename the phase (letters, digits, '_', '.', '-')")
        return Path(target)

    def newest_readable(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint that loads, and its state. One that does not (cut short by a
        power loss or a disk error) is set aside as ``<name>.unreadable`` with a one-line
        warning, and the one before it is tried (``keep_last`` > 1 keeps some)."""
        while (latest := self.ckpt.latest()) is not None:
            try:
                return latest, load_checkpoint(latest)
            except UnreadableCheckpoint as exc:
                aside = latest.with_name(latest.name + ".unreadable")
                latest.replace(aside)
                following = self.ckpt.latest()
                print(f"plfw: warning: {exc}; set aside as {aside.name}, "
                      + (f"resuming from {following.name}" if following else
                         "no earlier checkpoint is left"), file=sys.stderr, flush=True)
        return None

    def prepare(self, start: Start, config_yaml: str) -> None:
        """Fail before training if the folder is unusable; clear an overwritten run; write the
        resolved config. Called once every component was built, so a config mistake leaves no
        run directory behind."""
        if not self.main:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / _PROBE
            probe.write_bytes(b"0" * 4096)
            probe.unlink()
            self.lock.acquire()
        except OSError as exc:
            raise UserError(f"run directory {self.path} is not writable "
                            f"({exc.strerror or exc}); set run_dir=... to another folder") from None
        if not start.resume and start.overwrite:
            for old in self.ckpt.steps():
                self.ckpt.path(old).unlink(missing_ok=True)
            for name in (LOG, CURVE):
                (self.path / name).unlink(missing_ok=True)
        atomic_write_bytes(self.path / "config.yaml", config_yaml.encode())

    def log(self, record: dict[str, Any], name: str = LOG) -> None:
        """Append one timestamped record to metrics.jsonl (or ``name``), on disk before
        returning."""
        if not self.main:
            return
        record = {"time": round(time.time(), 3), **record}
        path = self.path / name
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview((json.dumps(record) + "\n").encode())
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                os.ftruncate(fd, start)  # no half line: the log still parses on resume
                raise DiskFull(path, "free some space and continue with --resume") from None
        finally:
            os.close(fd)

    def release(self) -> None:
        """Let another process work here (the kernel also does it when this one dies)."""
        self.lock.release()

    def drop_logs_after(self, step: int) -> None:
        """On resume, forget records of steps the checkpoint does not contain (they will be
        logged again), so metrics.jsonl and curve.jsonl read as one uninterrupted run. A line
        that does not parse (cut short by a power loss or a full disk) is dropped with one
        warning naming the file."""
        for name in (LOG, CURVE):
            path = self.path / name
            if not self.main or not path.is_file():
                continue
            kept, torn = [], 0
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                if not isinstance(record, dict) or not isinstance(record.get("step", 0),
                                                                   int | float):
                    torn += 1
                    continue
                if record.get("step", 0) <= step:
                    kept.append(line)
            if torn:
                print(f"plfw: warning: {path}: dropped {torn} unreadable line"
                      f"{'s' if torn > 1 else ''} (cut short by a power loss or a full disk?)",
                      file=sys.stderr, flush=True)
            atomic_write_bytes(path, "".join(f"{line}\n" for line in kept).encode())

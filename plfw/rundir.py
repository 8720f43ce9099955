"""The run directory's rules: never clobber a run by accident, one process at a time (a lock
the kernel drops when its holder dies), fail early when it is not writable, and a metrics log
(``metrics.jsonl``) that reads as one uninterrupted run, even after a full disk."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from plfw.checkpoint import CheckpointDir, atomic_write_bytes, checkpoint_step
from plfw.errors import DiskFull, UserError, is_disk_full
from plfw.locks import FolderLock
from plfw.runtime import Runtime, elastic_restart

LOG = "metrics.jsonl"
CURVE = "curve.jsonl"  # learning-curve scores (plfw.config.CurveSettings)


class RunDir:
    """``path`` with its checkpoints; only the main process (``main``) writes."""

    def __init__(self, path: str | Path, keep_last: int, main: bool = True) -> None:
        self.path, self.main = Path(path), main
        self.ckpt = CheckpointDir(self.path / "checkpoints", keep_last)
        self.lock = FolderLock(self.path, "run directory")

    def start_point(self, rt: Runtime, resume: bool, overwrite: bool) -> tuple[bool, bool, int]:
        """``(resume, overwrite, step)``: the checkpoint step every rank continues from (rank
        0's latest; -1 for none), after :meth:`check_start`. After a torchrun restart (a rank
        died) the run continues by itself from that checkpoint, or starts over without one."""
        agreed, restarts = -1, elastic_restart()
        if resume or restarts:
            latest = self.ckpt.latest() if self.main else None
            agreed = rt.rank0_int(checkpoint_step(latest) if latest else -1)
        if restarts:
            resume, overwrite = agreed >= 0, agreed < 0
            if self.main:
                print(f"plfw: restarted by torchrun (restart {restarts}): "
                      + (f"resuming from step {agreed}" if resume else "starting over"),
                      file=sys.stderr, flush=True)
        self.check_start(resume, overwrite)
        return resume, overwrite, agreed

    def check_start(self, resume: bool, overwrite: bool) -> None:
        """An existing run is continued only with ``resume``, replaced only with ``overwrite``;
        a run directory another process works in is refused (its lock is taken here)."""
        if self.main and self.path.is_dir():
            self.lock.acquire()
        if not resume and self.ckpt.latest() is not None and not overwrite:
            raise UserError(f"{self.path} already holds a run; continue it with --resume, "
                            f"start over with --overwrite, or set run_dir=...")

    def prepare(self, resume: bool, overwrite: bool, config_yaml: str) -> None:
        """Fail before training if the folder is unusable; clear an overwritten run; write the
        resolved config. Called once every component was built, so a config mistake leaves no
        run directory behind."""
        if not self.main:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".plfw-write-test"
            probe.write_bytes(b"0" * 4096)
            probe.unlink()
            self.lock.acquire()
        except OSError as exc:
            raise UserError(f"run directory {self.path} is not writable "
                            f"({exc.strerror or exc}); set run_dir=... to another folder") from None
        if not resume and overwrite:
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
        logged again), so metrics.jsonl and curve.jsonl read as one uninterrupted run."""
        for name in (LOG, CURVE):
            path = self.path / name
            if not self.main or not path.is_file():
                continue
            kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= step]
            atomic_write_bytes(path, "".join(f"{line}\n" for line in kept).encode())

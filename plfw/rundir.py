"""The run directory's rules: never clobber a run by accident, fail early when it is not
writable, and a metrics log (``metrics.jsonl``) that reads as one uninterrupted run."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from plfw.checkpoint import CheckpointDir, atomic_write_bytes
from plfw.errors import UserError

LOG = "metrics.jsonl"


class RunDir:
    """``path`` with its checkpoints; only the main process (``main``) writes."""

    def __init__(self, path: str | Path, keep_last: int, main: bool = True) -> None:
        self.path, self.main = Path(path), main
        self.ckpt = CheckpointDir(self.path / "checkpoints", keep_last)

    def check_start(self, resume: bool, overwrite: bool) -> None:
        """An existing run is continued only with ``resume``, replaced only with ``overwrite``."""
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
        except OSError as exc:
            raise UserError(f"run directory {self.path} is not writable "
                            f"({exc.strerror or exc}); set run_dir=... to another folder") from None
        if not resume and overwrite:
            for old in self.ckpt.steps():
                self.ckpt.path(old).unlink(missing_ok=True)
            (self.path / LOG).unlink(missing_ok=True)
        atomic_write_bytes(self.path / "config.yaml", config_yaml.encode())

    def log(self, record: dict[str, Any]) -> None:
        """Append one timestamped record to metrics.jsonl, on disk before returning."""
        if not self.main:
            return
        record = {"time": round(time.time(), 3), **record}
        with open(self.path / LOG, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def drop_logs_after(self, step: int) -> None:
        """On resume, forget records of steps the checkpoint does not contain (they will be
        logged again), so metrics.jsonl reads as one uninterrupted run."""
        path = self.path / LOG
        if not self.main or not path.is_file():
            return
        kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        atomic_write_bytes(path, "".join(f"{line}\n" for line in kept).encode())

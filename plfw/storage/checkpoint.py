"""Checkpoints that survive a crash and never execute code when loaded.

Writes go to a temporary file in the same folder, are fsynced, then renamed over the target, so a
kill at any moment leaves either the old or the new file, never half of one. ``latest`` is a small
text file naming the newest checkpoint (also written atomically). Loading uses
``torch.load(weights_only=True)``: a file carrying pickled objects is refused.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from plfw.core.errors import DiskFull, UserError, is_disk_full
from plfw.nn.features import is_frozen

FORMAT = "plfw-checkpoint-1"
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file + fsync + rename, so readers see the
    old file or the new one, never half of one. A full disk is a one-line :class:`DiskFull`
    naming the folder, raised after the temporary file is removed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(path) from None
        raise
    try:
        try:
            os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from others
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)  # a full disk may only show here (delayed allocation, NFS)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(exc):
            raise DiskFull(path) from None
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save through a temporary file + fsync + rename."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


class UnreadableCheckpoint(UserError):
    """A file that is not a torch file or was cut short (a power loss, a disk error)."""


def safe_load(path: str | Path) -> Any:
    """Load a .pt file without executing code from it; one-line UserError on any problem."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = str(exc).splitlines()[0] if str(exc) else "pickled objects"
        raise UserError(
            f"{path}: refused to load: it carries pickled Python objects that could run code "
            f"({detail[:120]}); re-save it as a plain state dict of tensors"
        ) from None
    except Exception as exc:  # truncated or not a torch file
        raise UnreadableCheckpoint(f"{path}: not a readable checkpoint ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:160] if str(exc) else 'unknown'})") from None


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, list | tuple) else x


def checkpoint_step(path: Path) -> int:
    """The step of a ``step_NNNNNNNN.pt`` file."""
    match = _STEP_FILE.match(path.name)
    if match is None:
        raise UserError(f"{path}: not a numbered plfw checkpoint (step_NNNNNNNN.pt)")
    return int(match.group(1))


class CheckpointDir:
    """``<run>/checkpoints``: numbered files, a ``latest`` pointer, keep-last-N pruning."""

    def __init__(self, folder: str | Path, keep_last: int = 3) -> None:
        self.folder = Path(folder)
        self.keep_last = max(1, keep_last)

    def steps(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.folder.iterdir()
                      if (m := _STEP_FILE.match(p.name)))

    def path(self, step: int) -> Path:
        return self.folder / f"step_{step:08d}.pt"

    def latest(self) -> Path | None:
        pointer = self.folder / "latest"
        if pointer.is_file():
            target = self.folder / pointer.read_text().strip()
            if target.is_file():
                return target
        steps = self.steps()
        return self.path(steps[-1]) if steps else None

    def save(self, state: dict[str, Any], step: int) -> Path:
        """Write checkpoint ``step`` and point ``latest`` at it, then prune. On a full disk the
        previous checkpoint stays the latest and no part of the new one is left."""
        target = self.path(step)
        try:
            atomic_torch_save({"format": FORMAT, **state}, target)
            atomic_write_bytes(self.folder / "latest", target.name.encode())
        except DiskFull as exc:
            pointer = self.folder / "latest"
            if not pointer.is_file() or pointer.read_text().strip() != target.name:
                target.unlink(missing_ok=True)  # maybe complete, but never named: not kept
            previous = self.latest()
            raise DiskFull(exc.path, f"the latest checkpoint stays "
                                     f"{previous.name if previous else 'none'}; free some space "
                                     f"and continue with --resume") from None
        for old in self.steps()[: -self.keep_last]:
            self.path(old).unlink(missing_ok=True)
        return target


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A full plfw checkpoint (dict with 'format'), validated."""
    state = safe_load(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path}: not a plfw training checkpoint")
    return state


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A module's state without its frozen loss networks (rebuilt, so not worth saving)."""
    prefixes = tuple(f"{n}." for n, m in module.named_modules() if n and is_frozen(m))
    return {k: v for k, v in module.state_dict().items() if not k.startswith(prefixes)}

"""One writer per folder: an advisory ``fcntl.flock`` on a lock file, held while the work runs.

The kernel drops a flock when the process holding it dies, however it dies (SIGKILL, OOM, a
machine reset on a local disk), so a crash never leaves a folder locked and there is no stale
lock to clean up by hand. A second process is refused at once, with one line naming the folder
and the holder's pid. The same process may take the same lock again (``plfw ablate`` locks a
job, then its ``Trainer`` locks the run directory): holds are counted per path.

flock is advisory and per host: on a network filesystem shared by several machines it protects
only against a second process on the same machine (NFS passes flock to the server on Linux >=
2.6.12, other filesystems may not).
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from plfw.core.errors import UserError

LOCK_FILE = ".plfw.lock"

_HELD: dict[str, list[int]] = {}  # resolved lock path -> [fd, hold count]
_GUARD = threading.Lock()


class FolderBusy(UserError):
    """Another process holds the folder's lock."""


class FolderLock:
    """``with FolderLock(folder, what):`` or ``acquire()`` / ``release()``; reentrant within
    one process."""

    def __init__(self, folder: str | Path, what: str = "folder",
                 name: str = LOCK_FILE) -> None:
        self.folder, self.what = Path(folder), what
        self.path = self.folder / name
        self.held = False
        self._key = ""

    def acquire(self) -> FolderLock:
        """Take the lock or raise :class:`FolderBusy` (never waits)."""
        if self.held:
            return self
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._unwritable(exc) from None
        key = self._key = str(self.path.resolve())
        with _GUARD:
            entry = _HELD.get(key)
            if entry is not None:
                entry[1] += 1
                self.held = True
                return self
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:  # a read-only folder or file system, no permission
                raise self._unwritable(exc) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                raise FolderBusy(
                    f"{self.folder} is in use by another plfw process"
                    f"{f' (pid {holder})' if holder else ''}; one {self.what} has one writer: "
                    f"wait for it to finish or stop it first") from None
            except BaseException:
                os.close(fd)
                raise
            try:  # the holder's pid, for the refusal message of the next process only
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except OSError:
                pass
            _HELD[key] = [fd, 1]
            self.held = True
        return self

    def _unwritable(self, exc: OSError) -> UserError:
        hint = " (run_dir=PATH)" if self.what == "run directory" else ""
        return UserError(f"{self.what} {self.folder} is not writable ({exc.strerror or exc}): "
                         f"make it writable or choose another {self.what}{hint}")

    def release(self) -> None:
        """Drop this hold; the last one unlocks the file (which stays, harmless, for the next)."""
        if not self.held:
            return
        self.held = False
        with _GUARD:
            entry = _HELD.get(self._key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] == 0:
                del _HELD[self._key]
                os.close(entry[0])  # closing the last descriptor releases the flock

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None

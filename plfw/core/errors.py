"""User-facing errors: the CLI prints these as one line and exits with code 2."""

from __future__ import annotations

import difflib
import errno
import warnings
from collections.abc import Iterable
from pathlib import Path

#: errno values that mean "the disk (or the user's quota) is full"
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
_python_formatwarning = warnings.formatwarning


class UserError(Exception):
    """A mistake the user can fix (bad config, missing file, unknown name): no traceback."""


class PlfwWarning(UserWarning):
    """A note for the user (files skipped, a fallback taken). The ``plfw`` command prints it
    as one line, ``plfw: warning: ...``, without Python's file name and source line; in code
    it is an ordinary ``UserWarning`` (filters and ``pytest.warns`` see it as one)."""


def format_plfw_warning(message: Warning | str, category: type[Warning], filename: str,
                        lineno: int, line: str | None = None) -> str:
    """``warnings.formatwarning`` for plfw's own notes: one line; others as Python prints
    them (the command installs this)."""
    if isinstance(category, type) and issubclass(category, PlfwWarning):
        return "plfw: warning: " + " ".join(str(message).split()) + "\n"
    return _python_formatwarning(message, category, filename, lineno, line)


class DiskFull(UserError):
    """The filesystem holding ``path`` ran out of space while it was written. Raised only after
    the half-written temporary file is gone, so the message can promise nothing was left."""

    def __init__(self, path: str | Path, hint: str = "free some space and run the command "
                                                     "again") -> None:
        self.path = Path(path)
        super().__init__(f"{self.path.parent}: no space left on device while writing "
                         f"{self.path.name}; nothing half-written was left; {hint}")


def is_disk_full(exc: BaseException) -> bool:
    """True for an OSError that says the disk or quota is full (ENOSPC, EDQUOT)."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE


def suggest(word: str, choices: Iterable[str], n: int = 3) -> str:
    """' (did you mean: a, b?)' for the closest valid names, else ' (valid: ...)'."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(word, choices, n=n, cutoff=0.5)
    if close:
        return f" (did you mean: {', '.join(close)}?)"
    if choices:
        shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
        return f" (valid: {shown})"
    return ""

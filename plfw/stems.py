"""Matching SR outputs to their reference images by file stem: one rule for every command.

SR tools name their outputs after the input with a suffix: ``plfw upscale`` writes
``<stem>_x4.png``, EDSR ``<stem>_x4_SR.png``, Real-ESRGAN ``<stem>_out.png``, BasicSR
``<stem>_rlt.png``. ``plfw eval --sr`` and ``plfw mos create`` both match a file to the reference
``<stem>`` when its stem is ``<stem>`` itself or ``<stem>`` followed by any run of the suffixes
in :data:`SUFFIXES` (case-insensitive, joined by ``_`` or ``-``), e.g. ``baby_x4_SR``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from plfw.errors import UserError

#: One suffix: a scale tag (x4, X2), or a word SR tools append to their outputs.
SUFFIXES = (r"x\d+", "sr", "out", "output", "result", "rlt", "srf_\\d+", "upscaled")
_TAIL = re.compile(r"(?:[_-](?:" + "|".join(SUFFIXES) + r"))+$", re.IGNORECASE)
SUFFIX_HELP = "<stem>, <stem>_x4, <stem>_SR, <stem>_x4_SR, <stem>_out, <stem>_rlt, ..."


def base_stem(stem: str) -> str:
    """``stem`` with any run of known SR suffixes removed from its end (``baby_x4_SR`` ->
    ``baby``); a stem made only of suffixes is kept whole."""
    base = _TAIL.sub("", stem)
    return base or stem


def match_stems(references: Iterable[str], files: Mapping[str, Path], where: str
                ) -> dict[str, Path]:
    """reference stem -> the file (from ``files``: stem -> path) that is its SR output.

    An exact stem wins; otherwise a stem whose suffixes strip down to the reference's. Files
    matching no reference are ignored; two files for one reference are a one-line error."""
    refs = set(references)
    out: dict[str, Path] = {}
    exact = {stem for stem in files if stem in refs}
    for stem, path in sorted(files.items()):
        key = stem if stem in exact else base_stem(stem)
        if key not in refs or (key in exact and stem != key):
            continue
        if key in out:
            raise UserError(f"{where}: both {out[key].name} and {path.name} match reference "
                            f"'{key}'; keep one")
        out[key] = path
    return out

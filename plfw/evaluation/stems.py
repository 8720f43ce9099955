"""Matching SR outputs to their reference images by file stem: one rule for every command.

SR tools name their outputs after the input with a suffix: ``plfw upscale`` writes
``<stem>_x4.png``, EDSR ``<stem>_x4_SR.png``, Real-ESRGAN ``<stem>_out.png``, BasicSR
``<stem>_rlt.png``. ``plfw eval --sr`` and ``plfw mos create`` both match a file to the reference
``<stem>`` when its stem is ``<stem>`` itself or ``<stem>`` followed by any run of the suffixes
in :data:`SUFFIXES` (case-insensitive, joined by ``_`` or ``-``), e.g. ``baby_x4_SR``.

LR images are named the same way with other words (``lr=True``; the ``paired_folders`` dataset):
DIV2K's ``0001x4`` (a scale tag right after the stem), ``0001_x4``, ``0001_LR``, ``baby_LR_x4``,
``img_001_SRF_4_LR``: see :data:`LR_SUFFIXES`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from plfw.core.errors import UserError

#: One suffix: a scale tag (x4, X2), or a word SR tools append to their outputs.
SUFFIXES = (r"x\d+", "sr", "out", "output", "result", "rlt", "srf_\\d+", "upscaled")
_TAIL = re.compile(r"(?:[_-](?:" + "|".join(SUFFIXES) + r"))+$", re.IGNORECASE)
SUFFIX_HELP = "<stem>, <stem>_x4, <stem>_SR, <stem>_x4_SR, <stem>_out, <stem>_rlt, ..."
#: One suffix of an LR image's name: a scale tag (which may also follow the stem directly, as
#: in DIV2K's ``0001x4``), or a word LR images carry.
LR_SUFFIXES = (r"x\d+", "lr", "lrbi", "bicubic", r"srf_\d+")
_LR_TAIL = re.compile(r"(?:(?:[_-]|(?<=[^_-])(?=x\d))(?:" + "|".join(LR_SUFFIXES) + r"))+$",
                      re.IGNORECASE)


def base_stem(stem: str, lr: bool = False) -> str:
    """``stem`` with any run of known SR suffixes removed from its end (``baby_x4_SR`` ->
    ``baby``; with ``lr``, LR suffixes: ``0001x4``, ``0001_LR`` -> ``0001``); a stem made only
    of suffixes is kept whole."""
    base = (_LR_TAIL if lr else _TAIL).sub("", stem)
    return base or stem


def stem_candidates(references: Iterable[str], files: Iterable[tuple[str, Path]],
                    lr: bool = False) -> dict[str, list[Path]]:
    """reference stem -> every file (from ``files``: (stem, path) pairs, a stem may repeat)
    named after it: its exact stem if there is one, else the stems whose suffixes strip down
    to it (``lr``: LR suffixes). Files matching no reference are left out."""
    refs = set(references)
    files = sorted(files)
    exact = {stem for stem, _ in files if stem in refs}
    out: dict[str, list[Path]] = {}
    for stem, path in files:
        key = stem if stem in exact else base_stem(stem, lr)
        if key not in refs or (key in exact and stem != key):
            continue
        out.setdefault(key, []).append(path)
    return out


def match_stems(references: Iterable[str], files: Mapping[str, Path], where: str,
                lr: bool = False) -> dict[str, Path]:
    """reference stem -> the file (from ``files``: stem -> path) that is its SR output (with
    ``lr``: its LR image).

    An exact stem wins; otherwise a stem whose suffixes strip down to the reference's. Files
    matching no reference are ignored; two files for one reference are a one-line error."""
    out: dict[str, Path] = {}
    for key, paths in stem_candidates(references, files.items(), lr).items():
        if len(paths) > 1:
            raise UserError(f"{where}: both {paths[0].name} and {paths[1].name} match "
                            f"reference '{key}'; keep one")
        out[key] = paths[0]
    return out

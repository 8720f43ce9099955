"""A MOS study folder: every method's version of every image, plus the paper's calibration anchors.

Layout of ``STUDY/``::

    study.json        manifest: methods, scale, seed, items (opaque id -> data set, image, method)
    images/<id>.png   one PNG per rated version (ids are random, so URLs do not reveal the method)
    ratings.sqlite    written by ``plfw mos serve`` (see ``plfw.mos.db``)

As in Ledig et al. (2017), nearest-neighbour upscaling (``nearest``, anchor score 1) and the
original image (``original``, anchor score 5) are rated like any method, and a few of their pairs
are shown first, labelled with their anchor score, to calibrate the raters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from plfw.core.errors import UserError

NEAREST, ORIGINAL = "nearest", "original"
ANCHORS = {NEAREST: 1, ORIGINAL: 5}
MANIFEST = "study.json"
FORMAT = 1


@dataclass(frozen=True)
class Item:
    """One image shown to raters: ``phase`` is 'main' (rated blind) or 'calibration' (shown with
    its ``anchor`` score; main items have none, whatever their method)."""

    id: str
    dataset: str
    image: str
    method: str
    file: str
    phase: str = "main"
    anchor: int | None = None


@dataclass(frozen=True)
class Study:
    """A loaded study: ``methods`` in display order, anchors first and last."""

    root: Path
    methods: tuple[str, ...]
    datasets: tuple[str, ...]
    images: tuple[tuple[str, str], ...]
    scale: int
    seed: int
    items: dict[str, Item]

    @property
    def main_items(self) -> dict[tuple[str, str, str], Item]:
        """(data set, image, method) -> the blind item rated in the main phase."""
        return {(i.dataset, i.image, i.method): i for i in self.items.values() if i.phase == "main"}

    @property
    def calibration_items(self) -> list[Item]:
        """Anchor items in the order they are shown: per image, nearest (1) then original (5)."""
        cal = [i for i in self.items.values() if i.phase == "calibration"]
        return sorted(cal, key=lambda i: (i.dataset, i.image, i.anchor or 0))

    @property
    def db_path(self) -> Path:
        return self.root / "ratings.sqlite"


def load_study(root: str | Path) -> Study:
    """Read ``root/study.json``; a missing or foreign folder is a one-line UserError."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise UserError(f"{root} is not a MOS study (no {MANIFEST}); "
                        f"make one with `plfw mos create`")
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"unsupported format {data.get('format')!r}")
        items = {d["id"]: Item(**d) for d in data["items"]}
        images = tuple((d, n) for d, n in data["images"])
        return Study(root, tuple(data["methods"]), tuple(data["datasets"]), images,
                     int(data["scale"]), int(data["seed"]), items)
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: corrupt study manifest ({exc})") from None

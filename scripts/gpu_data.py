"""Pack ../shared/data into .gpudata/ small enough to travel to a lent GPU machine.

    python scripts/gpu_data.py [--src ../shared/data] [--out .gpudata] [--sets T91,BSD200,...]
                               [--budget-mib 60]

A lent GPU machine gets the repository's working tree and carried paths, 64 MiB in all; the 391
training PNGs take 88 MB. Lossless WebP keeps every pixel (each file is decoded again and
compared) at about 70 % of the PNG size: T91 6.9 MiB, BSD200 32.0, General100 20.2, Set5 +
Set14 6.0, together 65 MiB (measured 2026-12-02), still too much beside the repository, so
``--sets`` packs a subset, or the data goes in parts over calls to a warm machine. Writes
``train/<set>/*.webp`` and ``benchmarks/{Set5,Set14}/{HR,LR_bicubic/X4}/*.png``
(copied unchanged), the layout ``scripts/train_models.sh`` reads through ``DATA=.gpudata``, and
stops with a one-line error if the result is over the budget. ``.gpudata/`` is git-ignored: the
data may not be redistributed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def pack(src: Path, out: Path, sets: list[str]) -> int:
    total = 0
    pngs = [png for name in sets for png in sorted((src / "train" / name).rglob("*.png"))]
    for png in pngs:
        dest = out / png.relative_to(src).with_suffix(".webp")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.is_file():
            with Image.open(png) as im:
                im.load()
                im.save(dest, "WEBP", lossless=True, quality=100, method=4)
                with Image.open(dest) as back:
                    if not np.array_equal(np.asarray(back.convert(im.mode)), np.asarray(im)):
                        sys.exit(f"gpu_data.py: {png}: lossless WebP changed pixels")
        total += dest.stat().st_size
    for bench in ("Set5", "Set14"):
        for sub in ("HR", "LR_bicubic/X4"):
            for png in sorted((src / "benchmarks" / bench / sub).glob("*.png")):
                dest = out / png.relative_to(src)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(png, dest)
                total += dest.stat().st_size
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path(".gpudata"))
    ap.add_argument("--sets", default="", help="training sets (default: every train/ folder)")
    ap.add_argument("--budget-mib", type=float, default=60.0)
    args = ap.parse_args()
    train = args.src / "train"
    if not train.is_dir():
        sys.exit(f"gpu_data.py: {train} not found; pass --src DIR (../shared/data)")
    sets = args.sets.split(",") if args.sets else sorted(d.name for d in train.iterdir()
                                                          if d.is_dir())
    missing = [name for name in sets if not (train / name).is_dir()]
    if missing:
        sys.exit(f"gpu_data.py: no training set {', '.join(missing)} in {train}")
    total = pack(args.src, args.out, sets)
    mib = total / 2**20
    if mib > args.budget_mib:
        sys.exit(f"gpu_data.py: {args.out} holds {mib:.1f} MiB, over the {args.budget_mib} MiB "
                 f"budget; raise --budget-mib or leave a training set out")
    print(f"gpu_data.py: {args.out}: {mib:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

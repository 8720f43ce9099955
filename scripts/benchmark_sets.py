"""Lay out benchmark sets from the SelfExSR data release the way `plfw eval` reads them.

    python scripts/benchmark_sets.py SELFEXSR OUT [--sets BSD100 Urban100] [--scale 4]

SELFEXSR is a clone of https://github.com/jbhuang0604/SelfExSR (Huang, Singh & Ahuja, CVPR
2015; the HR/LR pairs many SR papers score on; `../shared/data`'s Set5 and Set14 come from it) or
its bare git directory. Each set becomes OUT/<set>/HR/<name>.png and
OUT/<set>/LR_bicubic/X<scale>/<name>.png (``img_001_SRF_4_HR.png`` -> ``HR/img_001.png``), with
every pair checked (HR exactly ``scale`` times LR). plfw ships none of these images; this is how
the studies and the model card are checked on sets this project does not ship, e.g.

    plfw eval --model srgan --hr OUT/BSD100/HR --lr OUT/BSD100/LR_bicubic/X4 --scale 4

BSD100 is the BSDS300 test split: disjoint from BSD200 (its train + val), which plfw's
studies train on.
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

PATTERN = re.compile(r"(?P<name>.+)_SRF_(?P<scale>\d+)_(?P<kind>HR|LR)\.png$")


def _listing(root: Path, folder: str) -> dict[str, bytes | Path]:
    """File name -> path (a checkout) or bytes (a bare git directory) under ``folder``."""
    files = root / folder
    if files.is_dir():
        return {p.name: p for p in sorted(files.glob("*.png"))}
    git = ["git", f"--git-dir={root}"]
    done = subprocess.run([*git, "ls-tree", "--name-only", f"HEAD:{folder}"],
                          capture_output=True, text=True)
    if done.returncode:
        return {}
    out: dict[str, bytes | Path] = {}
    for name in done.stdout.split():
        if name.endswith(".png"):
            out[name] = subprocess.run([*git, "cat-file", "blob", f"HEAD:{folder}/{name}"],
                                       capture_output=True, check=True).stdout
    return out


def _open(source: bytes | Path) -> Image.Image:
    return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)


def lay_out(root: Path, out: Path, name: str, scale: int) -> int:
    """Write one set; returns its number of pairs. Refuses an incomplete or mismatched set."""
    folder = f"data/{name}/image_SRF_{scale}"
    files = _listing(root, folder)
    pairs: dict[str, dict[str, bytes | Path]] = {}
    for fname, source in files.items():
        m = PATTERN.match(fname)
        if m and int(m["scale"]) == scale:
            pairs.setdefault(m["name"], {})[m["kind"]] = source
    if not pairs:
        raise SystemExit(f"benchmark_sets.py: {root}: no {folder}/*_SRF_{scale}_HR.png; is it "
                         "a clone of jbhuang0604/SelfExSR (or its git directory)?")
    hr_dir, lr_dir = out / name / "HR", out / name / "LR_bicubic" / f"X{scale}"
    for d in (hr_dir, lr_dir):
        if d.exists() and any(d.iterdir()):
            raise SystemExit(f"benchmark_sets.py: {d} is not empty; remove it or pick another "
                             "OUT")
        d.mkdir(parents=True, exist_ok=True)
    for stem, kinds in sorted(pairs.items()):
        if set(kinds) != {"HR", "LR"}:
            raise SystemExit(f"benchmark_sets.py: {folder}: {stem} has only {sorted(kinds)}")
        with _open(kinds["HR"]) as hr, _open(kinds["LR"]) as lr:
            if hr.size != (lr.width * scale, lr.height * scale):
                raise SystemExit(f"benchmark_sets.py: {folder}: {stem}: HR {hr.size} is not "
                                 f"{scale}x LR {lr.size}")
            hr.save(hr_dir / f"{stem}.png")
            lr.save(lr_dir / f"{stem}.png")
    return len(pairs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("selfexsr", type=Path, help="a clone of jbhuang0604/SelfExSR or its .git")
    ap.add_argument("out", type=Path)
    ap.add_argument("--sets", nargs="+", default=["BSD100", "Urban100"])
    ap.add_argument("--scale", type=int, default=4)
    args = ap.parse_args()
    for name in args.sets:
        n = lay_out(args.selfexsr, args.out, name, args.scale)
        print(f"benchmark_sets.py: {name}: {n} pairs in {args.out / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

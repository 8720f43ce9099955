"""Draw docs/models/compare.png: bicubic | SRResNet | SRGAN | HR crops of the shipped val photos.

    python scripts/model_card_figure.py [--out docs/models/compare.png]
"""

from __future__ import annotations

import argparse

from plfw.core.plugins import load_plugins
from plfw.evaluation.evaluate import bicubic, load_pairs
from plfw.imaging.visuals import center_crop, grid, save_png
from plfw.inference.model import open_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/models/compare.png")
    ap.add_argument("--photos", default="assets/photos/val")
    args = ap.parse_args()
    registry = load_plugins().registry
    methods = {"bicubic": bicubic(4)}
    for name in ("srresnet", "srgan"):
        methods[name] = open_model(name, registry, "cpu").image
    pairs = load_pairs(args.photos, None, 4)
    rows = [[center_crop(m(p.lr if p.lr.shape[0] == 3 else p.lr.expand(3, -1, -1)), 120)
             for m in methods.values()] + [center_crop(p.hr, 120)] for p in pairs]
    save_png(grid(rows, [*methods, "HR"], [p.name for p in pairs], cell=240), args.out)
    print(args.out)


if __name__ == "__main__":
    main()

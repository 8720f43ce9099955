"""Draw docs/models/compare.png: bicubic | the models | HR, centre crops at 2x zoom.

    python scripts/model_card_figure.py [--out docs/models/compare.png] [--photos DIR]
                                        [--models srresnet,srgan,"plfw 0.1 SRGAN=FILE",...]

``--models`` takes bundled names or ``label=file`` (an exported generator or a checkpoint);
``--photos`` defaults to the shipped validation photos (only shipped images go into the docs).
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
    ap.add_argument("--models", default="srresnet,srgan")
    ap.add_argument("--crop", type=int, default=120)
    args = ap.parse_args()
    registry = load_plugins().registry
    methods = {"bicubic": bicubic(4)}
    for spec in filter(None, args.models.split(",")):
        label, _, source = spec.partition("=")
        methods[label] = open_model(source or label, registry, "cpu").image
    pairs = load_pairs(args.photos, None, 4)
    rows = [[center_crop(m(p.lr if p.lr.shape[0] == 3 else p.lr.expand(3, -1, -1)), args.crop)
             for m in methods.values()] + [center_crop(p.hr, args.crop)] for p in pairs]
    save_png(grid(rows, [*methods, "HR"], [p.name for p in pairs], cell=2 * args.crop),
             args.out)
    print(args.out)


if __name__ == "__main__":
    main()

"""Draw docs/models/compare.png: bicubic | the models | HR, centre crops at 2x zoom.

    python scripts/model_card_figure.py [--out docs/models/compare.png] [--photos DIR]
                                        [--models srresnet,srgan,"plfw 0.1 SRGAN=FILE",...]
                                        [--raw]

``--models`` takes bundled names or ``label=file`` (an exported generator or a checkpoint);
``--photos`` defaults to the shipped validation photos (only shipped images go into the docs).
For each grey photo it also prints each model's colour stray: the RMS distance of its output's
channels from their mean, in grey levels (0-255). A model trained on colour crops only can add
colour speckle to a grey input (docs/models.md, issue 37's trial 3). The crops show what
``plfw upscale`` writes: a grey photo's output is the channel mean (``--raw``: the model's
output as it is).
"""

from __future__ import annotations

import argparse

import torch

from plfw.core.plugins import load_plugins
from plfw.evaluation.evaluate import bicubic, load_pairs
from plfw.imaging.visuals import center_crop, grid, save_png
from plfw.inference.model import open_model


def colour_stray(image: torch.Tensor) -> float:
    """RMS distance of a (3, H, W) image's channels from their mean, in 0-255 grey levels."""
    return float((image.clamp(0, 1) - image.clamp(0, 1).mean(0)).pow(2).mean().sqrt()) * 255


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/models/compare.png")
    ap.add_argument("--photos", default="assets/photos/val")
    ap.add_argument("--models", default="srresnet,srgan")
    ap.add_argument("--crop", type=int, default=120)
    ap.add_argument("--raw", action="store_true", help="grey photos: the model's own colours")
    args = ap.parse_args()
    registry = load_plugins().registry
    methods = {"bicubic": bicubic(4)}
    for spec in filter(None, args.models.split(",")):
        label, _, source = spec.partition("=")
        methods[label] = open_model(source or label, registry, "cpu").image
    pairs = load_pairs(args.photos, None, 4)
    rows, stray = [], {}
    for p in pairs:
        outs = [m(p.lr if p.lr.shape[0] == 3 else p.lr.expand(3, -1, -1))
                for m in methods.values()]
        grey = p.hr.shape[0] == 1 or bool((p.hr == p.hr[:1]).all())  # maybe stored as RGB
        if grey:
            stray[p.name] = [colour_stray(o) for o in outs]
            if not args.raw:  # as plfw upscale writes it
                outs = [o.mean(0, keepdim=True).expand(3, -1, -1) for o in outs]
        rows.append([center_crop(o, args.crop) for o in outs] + [center_crop(p.hr, args.crop)])
    for name, values in stray.items():
        print(f"colour stray on grey '{name}' (grey levels RMS): " + ", ".join(
            f"{label} {v:.2f}" for label, v in zip(methods, values, strict=True)))
    save_png(grid(rows, [*methods, "HR"], [p.name for p in pairs], cell=2 * args.crop),
             args.out)
    print(args.out)


if __name__ == "__main__":
    main()

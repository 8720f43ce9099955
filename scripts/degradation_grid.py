"""Draw docs/degradation.png: a centre crop of each shipped validation photo, its plain bicubic
LR, and LR images that ``degraded_folder`` (Real-ESRGAN's second-order degradation, default
settings) makes from the same crop with different item seeds; LR shown at HR size (nearest).

    python scripts/degradation_grid.py [--out docs/degradation.png]
"""

from __future__ import annotations

import argparse
import random

import torch
import torch.nn.functional as F
from plfw_builtins.datasets.degradation import DegradationParams, degrade

from plfw.evaluation.evaluate import load_pairs
from plfw.imaging.imresize import bicubic_downscale_uint8
from plfw.imaging.visuals import center_crop, grid, save_png


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/degradation.png")
    ap.add_argument("--photos", default="assets/photos/val")
    ap.add_argument("--samples", type=int, default=5)
    args = ap.parse_args()
    params = DegradationParams(root=args.photos)
    rows, names = [], []
    for pair in load_pairs(args.photos, None, 4):
        hr = center_crop(pair.hr.expand(3, -1, -1), 128)
        bicubic = bicubic_downscale_uint8(hr * 255, 4).float() / 255
        row = [hr, F.interpolate(bicubic[None], scale_factor=4, mode="nearest")[0]]
        for seed in range(args.samples):
            torch.manual_seed(seed)
            random.seed(seed)
            lr = degrade(hr, 4, params)
            row.append(F.interpolate(lr[None], scale_factor=4, mode="nearest")[0])
        rows.append(row)
        names.append(pair.name)
    labels = ["HR crop", "bicubic LR"] + [f"degraded, seed {i}" for i in range(args.samples)]
    save_png(grid(rows, labels, names), args.out)
    print(args.out)


if __name__ == "__main__":
    main()

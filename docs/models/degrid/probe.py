"""Two measurements behind scripts/degrid.py (README, "Checkerboard artefacts"), on Set5/Set14.

    python docs/models/degrid/probe.py DATA MODEL...   # e.g. ../shared/data srresnet srgan.pt

1. ``grid``'s optimum applied directly: SR minus the periodic part of SR - HR (the per-phase
   offsets, over the whole image or Gaussian windows of sigma LR pixels); ``periodic_db`` after.
2. ``peak`` on the pixels: 200 Adam steps on each output, MSE to it + ``peak`` vs HR.
Prints PSNR-Y, periodic_db and PSNR to the model's own output (means over the set) for each model,
set and variant.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from plfw_builtins.losses.periodic import PeakLoss

import plfw
from plfw.evaluation.evaluate import load_pairs
from plfw.inference.generators import open_generator, to_unit

SIGMAS = [0, 2, 4, 8]  # 0: one offset per phase for the whole image


def smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma == 0:
        return x.mean(dim=(-2, -1), keepdim=True).expand_as(x)
    r = int(3 * sigma)
    k = torch.exp(-torch.arange(-r, r + 1).double() ** 2 / (2 * sigma**2))
    k = (k / k.sum()).float()
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def periodic_part(r: torch.Tensor, sigma: float, s: int = 4) -> torch.Tensor:
    h, w = r.shape[-2] // s * s, r.shape[-1] // s * s
    m = smooth(F.pixel_unshuffle(r[None, :, :h, :w], s), sigma)
    n, _, y, x = m.shape
    m = m.reshape(n, -1, s * s, y, x)
    out = torch.zeros_like(r)
    out[:, :h, :w] = F.pixel_shuffle((m - m.mean(2, keepdim=True)).reshape(n, -1, y, x), s)[0]
    return out


def on_pixels(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    peak, x = PeakLoss(4, 64), sr.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=1e-3)
    for _ in range(200):
        crop = x[None, :, 4:-4, 4:-4]
        loss = 1e3 * (x - sr).square().mean() + peak(crop, hr[None, :, 4:-4, 4:-4])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return x.detach().clamp(0, 1)


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    bench_root = Path(sys.argv[1]) / "benchmarks"
    metric, psnr_y = plfw.build("metric", "periodic_db"), plfw.build("metric", "psnr_y")
    for name in sys.argv[2:]:
        g = open_generator(name, plfw.load_registry())
        g.module.eval()
        for bench in ("Set5", "Set14"):
            rows: dict[str, list[tuple[float, float, float]]] = {}
            root = bench_root / bench
            for pair in load_pairs(root / "HR", root / "LR_bicubic" / "X4", 4):
                hr = pair.hr
                with torch.no_grad():
                    sr = to_unit(g.module(pair.lr[None]), g.out_range)[0].clamp(0, 1)
                variants = {"as is": sr}
                for sigma in SIGMAS:
                    variants[f"grid optimum, sigma {sigma}"] = (
                        sr - periodic_part(sr - hr, sigma)).clamp(0, 1)
                variants["peak on the pixels"] = on_pixels(sr, hr)
                for key, img in variants.items():
                    mse = (img - sr).square().mean().clamp_min(1e-12)
                    to_own = float(10 * torch.log10(1 / mse))
                    rows.setdefault(key, []).append((psnr_y(img, hr), metric(img, hr), to_own))
            for key, vals in rows.items():
                p = sum(v[0] for v in vals) / len(vals)
                d = sum(v[1] for v in vals) / len(vals)
                own = min(v[2] for v in vals), max(v[2] for v in vals)
                print(f"{Path(name).stem:16s} {bench:5s} {key:26s} PSNR-Y {p:.2f}  periodic_db "
                      f"{d:.2f}  PSNR to own output {own[0]:.1f}-{own[1]:.1f}", flush=True)


if __name__ == "__main__":
    main()

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
from plfw_builtins.artefacts import PeakLoss, PeriodicExcess

from plfw.generators import open_generator, to_unit
from plfw.images import load_image

SIGMAS = [0, 2, 4, 8]  # 0: one offset per phase for the whole image


def psnr_y(a: torch.Tensor, b: torch.Tensor, border: int = 4) -> float:
    w = torch.tensor([65.481, 128.553, 24.966]).view(3, 1, 1) / 255
    d = ((a - b) * w).sum(0)[border:-border, border:-border]
    return float(10 * torch.log10(1 / d.square().mean()))


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
    metric = PeriodicExcess(4, 64, 4)
    for name in sys.argv[2:]:
        g = open_generator(name)
        g.module.eval()
        for bench in ("Set5", "Set14"):
            rows: dict[str, list[tuple[float, float, float]]] = {}
            for hr_path in sorted((bench_root / bench / "HR").glob("*.png")):
                lr = load_image(next((bench_root / bench / "LR_bicubic" / "X4").glob(
                    hr_path.stem + "*")))
                with torch.no_grad():
                    sr = to_unit(g.module(lr[None]), g.out_range)[0].clamp(0, 1)
                hr = load_image(hr_path)[:, :sr.shape[1], :sr.shape[2]]
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

"""PSNR and SSIM on the Y channel, computed the way SR papers report them.

The SR benchmark protocol: both images are quantized to 8 bits, converted to BT.601 luma (studio
swing, float64, not rounded), ``border`` pixels are cut from each side, then PSNR uses peak 255 and
SSIM follows Wang et al.'s reference ``ssim_index.m`` (11x11 Gaussian window, sigma 1.5, K1 = 0.01,
K2 = 0.03, L = 255, 'valid' filtering, mean of the map). Any deviation (RGB PSNR, [0, 1] peak, no
quantization, SSIM with padding) moves the numbers enough to make paper comparisons meaningless.
"""

from __future__ import annotations

import math

import torch

_BT601 = (65.481, 128.553, 24.966)


def rgb_to_y(x01: torch.Tensor) -> torch.Tensor:
    """BT.601 studio-swing luma on the 0..255 scale: 16 + 65.481 R + 128.553 G + 24.966 B for
    RGB in [0, 1] (channels at dim -3; result in [16, 235] with that dim kept as size 1).

    A single-channel image is already grey and is returned as-is on the 0..255 scale (x * 255),
    which is how the benchmarks score Set14's grayscale ``bridge``."""
    channels = x01.shape[-3]
    if channels == 1:
        return x01 * 255
    if channels != 3:
        raise ValueError(f"rgb_to_y expects 1 or 3 channels, got {channels}")
    coeffs = torch.tensor(_BT601, dtype=x01.dtype, device=x01.device).view(3, 1, 1)
    return 16 + (x01 * coeffs).sum(dim=-3, keepdim=True)


def _quantized_y(x01: torch.Tensor) -> torch.Tensor:
    """8-bit quantization as MATLAB's im2uint8 (round half up, saturate), then float64 Y."""
    q = torch.floor(x01.detach().to(torch.float64).clamp(0, 1) * 255 + 0.5)
    return rgb_to_y(q / 255)


def _prepare(sr: torch.Tensor, hr: torch.Tensor, border: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantized Y planes (float64, 1xHxW) of both images with ``border`` pixels cut off."""
    if sr.dim() != 3 or sr.shape != hr.shape:
        raise ValueError(f"expected two CHW images of the same shape, got {tuple(sr.shape)} and "
                         f"{tuple(hr.shape)}")
    if border < 0 or 2 * border >= min(sr.shape[-2:]):
        raise ValueError(f"border {border} is too large for a {tuple(sr.shape[-2:])} image")
    ys = [_quantized_y(x) for x in (sr, hr)]
    if border:
        ys = [y[..., border:-border, border:-border] for y in ys]
    return ys[0], ys[1]


def psnr_y(sr: torch.Tensor, hr: torch.Tensor, border: int) -> float:
    """PSNR [dB] on quantized Y with peak 255, ``border`` pixels cut from each side. Identical
    images give ``math.inf`` (not capped), so averaging over a set shows the degenerate case."""
    a, b = _prepare(sr, hr, border)
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _gaussian_valid(x: torch.Tensor, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """MATLAB's filter2(fspecial('gaussian', size, sigma), x, 'valid') over the last two dims.
    That normalized 2-D window is the outer product of a normalized 1-D one, so it runs as two
    1-D passes of shifted slices (much faster than a float64 conv2d on CPU)."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = (g / g.sum()).tolist()
    h, w = x.shape[-2:]
    rows = x[..., : h - size + 1, :] * g[0]
    for k in range(1, size):
        rows.add_(x[..., k:k + h - size + 1, :], alpha=g[k])
    out = rows[..., : w - size + 1] * g[0]
    for k in range(1, size):
        out.add_(rows[..., k:k + w - size + 1], alpha=g[k])
    return out


def ssim_y(sr: torch.Tensor, hr: torch.Tensor, border: int) -> float:
    """SSIM on quantized Y as Wang et al.'s ``ssim_index.m`` computes it (see module docstring),
    after cutting ``border`` pixels from each side; float64 throughout."""
    a, b = _prepare(sr, hr, border)
    h, w = a.shape[-2:]
    if min(h, w) < 11:
        raise ValueError(f"ssim_y needs at least 11x11 pixels after the border, got {(h, w)}")
    # The five local statistics as one batch.
    stack = torch.cat([a, b, a * a, b * b, a * b])
    mu_a, mu_b, e_aa, e_bb, e_ab = _gaussian_valid(stack)
    var_a, var_b, cov = e_aa - mu_a**2, e_bb - mu_b**2, e_ab - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())

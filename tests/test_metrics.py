"""Y-channel PSNR/SSIM: closed-form cases, an independent SSIM, the plugin, and the paper's
bicubic baseline on Set5/Set14."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import plfw
from plfw.core.errors import UserError
from plfw.evaluation.metrics import psnr_y, rgb_to_y, ssim_y
from plfw.imaging.imresize import imresize


def test_rgb_to_y_range_and_grey() -> None:
    rgb = torch.stack([torch.zeros(3, 2, 2), torch.ones(3, 2, 2)])
    y = rgb_to_y(rgb)
    assert y.shape == (2, 1, 2, 2)
    assert torch.allclose(y[0], torch.full((1, 2, 2), 16.0))
    assert torch.allclose(y[1], torch.full((1, 2, 2), 235.0))
    grey = torch.rand(1, 4, 4)
    assert torch.equal(rgb_to_y(grey), grey * 255)


def test_psnr_identical_is_inf_and_known_value() -> None:
    hr = torch.full((3, 20, 20), 128 / 255)
    assert psnr_y(hr, hr.clone(), 4) == math.inf
    # +10 on every channel moves Y by 10 * 219 / 255 everywhere.
    sr = hr + 10 / 255
    expected = 20 * math.log10(255 / (10 * 219 / 255))
    assert psnr_y(sr, hr, 4) == pytest.approx(expected, abs=1e-9)


def test_quantization_and_border() -> None:
    hr = torch.rand(3, 24, 24)
    # Sub-quantum noise disappears once both images are rounded to 8 bits.
    assert psnr_y((hr * 255).round() / 255 + 1e-4, (hr * 255).round() / 255, 0) == math.inf
    sr = hr.clone()
    sr[:, :4, :] = 1 - sr[:, :4, :]
    assert psnr_y(sr, hr, 4) == math.inf
    assert psnr_y(sr, hr, 3) < 30


def test_ssim_constant_images_closed_form() -> None:
    a, b = torch.full((1, 16, 16), 100 / 255), torch.full((1, 16, 16), 150 / 255)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 150 + c1) / (100**2 + 150**2 + c1)
    assert ssim_y(a, b, 0) == pytest.approx(expected, abs=1e-12)
    assert ssim_y(a, a, 0) == pytest.approx(1.0, abs=1e-12)


def reference_ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    """ssim_index.m written directly: 2-D 11x11 Gaussian window, 'valid' conv2d."""
    r = torch.arange(11, dtype=torch.float64) - 5
    win = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / 4.5)
    win = (win / win.sum())[None, None]

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t[None, None], win)

    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    c1, c2 = 6.5025, 58.5225
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(m.mean())


def test_ssim_matches_direct_implementation() -> None:
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(3, 30, 26, generator=g)
    sr = (hr + 0.1 * torch.randn(3, 30, 26, generator=g)).clamp(0, 1)
    q = [rgb_to_y((t.double() * 255).round() / 255)[0, 2:-2, 2:-2] for t in (sr, hr)]
    assert ssim_y(sr, hr, 2) == pytest.approx(reference_ssim(*q), abs=1e-12)


def test_metric_plugins() -> None:
    assert {"psnr_y", "ssim_y"} <= set(plfw.list_components("metric"))
    hr = torch.rand(3, 32, 32)
    sr = hr.clone()
    sr[:, :2] = 0
    psnr = plfw.build("metric", {"name": "psnr_y", "border": 2})
    ssim = plfw.build("metric", "ssim_y")
    assert psnr.name == "psnr_y" and psnr.higher_is_better and ssim.higher_is_better
    assert psnr(sr, hr) == math.inf
    assert ssim(sr, hr) == pytest.approx(1.0) and ssim.border == 4
    with pytest.raises(UserError, match="border"):
        plfw.build("metric", {"name": "ssim_y", "border": -1})
    with pytest.raises(UserError, match="did you mean"):
        plfw.build("metric", {"name": "psnr_y", "boarder": 4})


def _load01(path: Path) -> torch.Tensor:
    a = torch.from_numpy(np.array(Image.open(path))).double() / 255
    return a[None] if a.dim() == 2 else a.permute(2, 0, 1)


@pytest.mark.parametrize(("bench", "psnr", "ssim"),
                         [("Set5", 28.43, 0.811), ("Set14", 25.99, 0.703)])
def test_bicubic_baseline_matches_paper(shared_data: Path, bench: str, psnr: float,
                                        ssim: float) -> None:
    """Paper Table 2 bicubic PSNR (within 0.05 dB): the MATLAB LR files upscaled x4 with our
    imresize, scored on Y with a 4-pixel border; grayscale bridge scored on its one channel."""
    root = shared_data / "benchmarks" / bench
    scores = []
    for hr_path in sorted((root / "HR").glob("*.png")):
        hr = _load01(hr_path)
        sr = imresize(_load01(root / "LR_bicubic" / "X4" / hr_path.name), scale=4)
        scores.append((psnr_y(sr, hr, 4), ssim_y(sr, hr, 4)))
    mean_psnr, mean_ssim = np.mean(scores, axis=0)
    assert mean_psnr == pytest.approx(psnr, abs=0.05)
    assert mean_ssim == pytest.approx(ssim, abs=0.002)

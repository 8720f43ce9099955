"""Periodic (checkerboard) artefacts: the ``periodic_db`` and ``grid_error`` metrics, and what
the ``grid`` and ``peak`` losses share with them.

``periodic_db`` is how much more periodic energy an SR image has than its HR image.
``grid_error`` is a second look at the same artefact that does not go through a spectrum: the
part of the error SR - HR that is locked to the sub-pixel grid (:func:`periodic_component`), in
grey levels.

Sub-pixel convolution (pixel shuffle) at scale s makes each output pixel's value depend on its
position modulo s; when the s^2 sub-filters disagree, a pattern with period s appears, which is
energy at exactly the spatial frequencies k/s cycles per pixel (k = 1..s-1, and 1/2 for the
x2 stages of a x4 network). Natural images have no spectral peak there, so the measure compares
each such frequency with its neighbourhood:

1. luma (BT.601, [0, 1]) with ``border`` pixels cut off; a Welch power spectrum: the mean of
   |FFT|^2 over half-overlapping ``tile`` x ``tile`` tiles with a 2-D Hann window;
2. at every grid frequency (ky, kx) in {0, 1/s, ..., (s-1)/s}^2 except (0, 0), the peak ratio
   P(peak) / median(P over the ring of bins 2 to 3 away; the Hann window leaks a true peak into
   the adjacent bins, which are skipped);
3. the image's periodic energy E = mean of the peak ratios;
4. the score is the excess ``max(0, 10 log10(E_SR / E_HR))`` dB: 0 means no more periodic
   energy than the HR image (less is not better: it is usually blur), a few dB is a visible
   grid. Lower is better. Images smaller than one tile use the largest tile that fits.

``periodic_db_rgb`` is the same measure on each colour channel (HR's same channel as the
reference), reporting the worst channel. A grid can sit in the colours with weights that cancel
in luma: red and blue up where green is down. ``periodic_db`` cannot see it, yet it shows as a
colour mesh, and in full strength wherever the output is viewed as grey (a grey photo's
channels averaged). The de-grid step made exactly that when its ``peak`` loss looked at luma
only (docs/models.md), hence the loss's ``channels: rgb`` and this metric.

Comparing with HR cancels what the image itself has at those frequencies (JPEG's 8x8 blocks,
man-made regular textures).

The ``grid`` loss penalises the same pattern while training: the part of SR - HR that repeats
with the sub-pixel period (see :class:`GridLoss`). In SRGAN's GAN phase both the VGG54 content
loss and the adversarial loss let the sub-pixel filters drift apart (README, "Checkerboard
artefacts"); this loss pulls them together without constraining anything else, but by pulling
SR towards HR at the grid frequencies, where SR is smoother than HR, it can make a peak there.
The ``peak`` loss (:class:`PeakLoss`) is ``periodic_db`` itself as a loss, and is what removes
the grid (README).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

import plfw
from plfw import UserError

_LUMA = (0.299, 0.587, 0.114)


@dataclass
class PeriodicParams:
    """Excess periodic energy at the sub-pixel grid's frequencies (dB vs HR; lower is better)."""

    period: int = 4  # the upscaling factor whose grid is looked for
    tile: int = 64  # Welch tile side (a multiple of period)
    border: int = 4
    channels: str = "luma"  # luma, or rgb: each colour channel, the worst one counts


@dataclass
class PeriodicRGBParams(PeriodicParams):
    """Excess periodic energy in the worst colour channel (dB vs HR's channel; lower is
    better): also a grid that cancels in luma."""

    channels: str = "rgb"


CHANNELS = ("luma", "rgb")


def planes(x: torch.Tensor, channels: str) -> list[torch.Tensor]:
    """The 2-D planes (..., H, W) a periodic measure looks at: luma, or each channel."""
    if channels == "luma" or x.shape[-3] == 1:
        return [luma(x)]
    return [x[..., c, :, :] for c in range(x.shape[-3])]


def luma(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of (..., C, H, W) images, C = 1 or 3."""
    x = x.float()
    if x.shape[-3] == 1:
        return x[..., 0, :, :]
    return sum(x[..., c, :, :] * w for c, w in enumerate(_LUMA))


def welch_spectrum(y: torch.Tensor, tile: int) -> torch.Tensor:
    """Mean power spectrum of half-overlapping Hann-windowed tiles of 2-D images (..., H, W),
    averaged over the tiles and any leading dimensions."""
    step = tile // 2
    window = torch.outer(torch.hann_window(tile, periodic=True, dtype=y.dtype, device=y.device),
                         torch.hann_window(tile, periodic=True, dtype=y.dtype, device=y.device))
    tiles = y.unfold(-2, tile, step).unfold(-2, tile, step).reshape(-1, tile, tile)
    tiles = tiles - tiles.mean(dim=(-2, -1), keepdim=True)
    return torch.fft.fft2(tiles * window).abs().square().mean(0)


def peak_ratios(power: torch.Tensor, period: int) -> torch.Tensor:
    """Power at each grid frequency over the median of its ring (step 2 above), a vector."""
    n = power.shape[-1]
    k = torch.arange(period, device=power.device) * n // period
    py, px = (t.flatten()[1:] for t in torch.meshgrid(k, k, indexing="ij"))  # skip (0, 0)
    d = torch.arange(-3, 4, device=power.device)
    dy, dx = (t.flatten() for t in torch.meshgrid(d, d, indexing="ij"))
    keep = torch.maximum(dy.abs(), dx.abs()) >= 2
    dy, dx = dy[keep], dx[keep]
    ring = power[(py[:, None] + dy) % n, (px[:, None] + dx) % n]
    return power[py, px] / ring.median(dim=1).values.clamp_min(1e-30)


def periodic_energy(y: torch.Tensor, period: int, tile: int) -> float:
    """Mean peak-to-neighbourhood power ratio at the grid frequencies (step 3 above)."""
    return float(peak_ratios(welch_spectrum(y.double(), tile), period).mean())


class PeriodicExcess:
    """``(sr, hr) -> dB``; see the module docstring."""

    higher_is_better = False
    networks: tuple[str, ...] = ()

    def __init__(self, period: int, tile: int, border: int, channels: str = "luma") -> None:
        self.period, self.tile, self.border, self.channels = period, tile, border, channels

    def energies(self, x: torch.Tensor) -> list[float]:
        b = self.border
        out = []
        for y in planes(x[..., b:-b, b:-b] if b else x, self.channels):
            tile = min(self.tile, min(y.shape) // self.period * self.period)
            if tile < 4 * self.period:
                raise UserError(f"periodic_db: image {tuple(y.shape)} (after a {b}-pixel "
                                f"border) is smaller than 4 periods of {self.period} pixels")
            out.append(periodic_energy(y, self.period, tile))
        return out

    def __call__(self, sr: torch.Tensor, hr: torch.Tensor) -> float:
        if sr.shape[-3] != hr.shape[-3]:  # grey against colour: the channel mean of the other
            sr, hr = (x.mean(-3, keepdim=True) for x in (sr, hr))
        worst = max(s / h for s, h in zip(self.energies(sr), self.energies(hr), strict=True))
        return max(0.0, 10 * math.log10(worst))

    def __repr__(self) -> str:
        return (f"periodic_db(period={self.period}, tile={self.tile}, border={self.border}, "
                f"channels={self.channels})")


def periodic_component(r: torch.Tensor, period: int, window: int) -> torch.Tensor:
    """The grid-locked part of residuals ``r`` (N, C, H, W): split into the period^2
    sub-pixel phases (``r[..., i::s, j::s]``), each phase averaged over windows of ``window``
    periods (0: the whole image), minus the mean over phases. Shape (N, C, s^2, y, x); zero
    for any residual without a period-s pattern."""
    s = period
    h, w = r.shape[-2] // s * s, r.shape[-1] // s * s
    phases = F.pixel_unshuffle(r[..., :h, :w], s)  # (N, C * s^2, H / s, W / s)
    if window:
        means = F.avg_pool2d(phases, window, ceil_mode=True)
    else:
        means = phases.mean(dim=(-2, -1), keepdim=True)
    n, _, y, x = means.shape
    means = means.reshape(n, -1, s * s, y, x)
    return means - means.mean(dim=2, keepdim=True)


@dataclass
class GridErrorParams:
    """Grid-locked error: RMS of the sub-pixel-periodic part of SR - HR, grey levels (lower is
    better; 0 = none)."""

    period: int = 4  # the upscaling factor whose grid is looked for
    window: int = 0  # phase means over windows of this many periods; 0: the whole image
    border: int = 4


class GridError:
    """``(sr, hr) -> grey levels``: the RMS over the image of :func:`periodic_component` of the
    luma error (BT.601, 0-255), ``border`` pixels cut. With ``window`` 0 it is the pattern that
    repeats over the whole image (a checkerboard the network's weights print everywhere); with a
    window it also counts local patterns, and the noise of averaging fewer pixels."""

    higher_is_better = False
    networks: tuple[str, ...] = ()

    def __init__(self, period: int, window: int, border: int) -> None:
        self.period, self.window, self.border = period, window, border

    def __call__(self, sr: torch.Tensor, hr: torch.Tensor) -> float:
        b = self.border
        r = 255.0 * (luma(sr.double()) - luma(hr.double()))
        r = r[..., b:-b, b:-b] if b else r
        if min(r.shape[-2:]) < self.period:
            raise UserError(f"grid_error: image {tuple(r.shape[-2:])} (after a {b}-pixel border) "
                            f"is smaller than one period of {self.period} pixels")
        comp = periodic_component(r.reshape(1, 1, *r.shape[-2:]), self.period, self.window)
        return float(comp.square().mean().sqrt())

    def __repr__(self) -> str:
        return f"grid_error(period={self.period}, window={self.window}, border={self.border})"


def build_grid_error(p: GridErrorParams) -> GridError:
    if p.period < 2 or p.window < 0 or p.border < 0:
        raise UserError(f"metric grid_error: need period >= 2, window >= 0 (0: the whole "
                        f"image) and border >= 0; got period {p.period}, window {p.window}, "
                        f"border {p.border}")
    return GridError(p.period, p.window, p.border)


def build_periodic(p: PeriodicParams) -> PeriodicExcess:
    if p.period < 2 or p.tile < 4 * p.period or p.tile % p.period or p.border < 0:
        raise UserError(f"metric periodic_db: need period >= 2, tile a multiple of period and "
                        f">= 4 periods, border >= 0; got period {p.period}, tile {p.tile}, "
                        f"border {p.border}")
    if p.channels not in CHANNELS:
        raise UserError(f"metric periodic_db: channels must be one of {', '.join(CHANNELS)}; "
                        f"got {p.channels!r}")
    return PeriodicExcess(p.period, p.tile, p.border, p.channels)


@plfw.hookimpl
def plfw_register_metrics(register: Any) -> None:
    register("periodic_db", build_periodic, PeriodicParams,
             "excess checkerboard energy at the sub-pixel grid's frequencies, dB vs HR (lower "
             "is better; 0 = as periodic as HR)")
    register("periodic_db_rgb", build_periodic, PeriodicRGBParams,
             "periodic_db in the worst colour channel: also a grid that cancels in luma, dB vs "
             "HR (lower is better)")
    register("grid_error", build_grid_error, GridErrorParams,
             "grid-locked error: RMS of the sub-pixel-periodic part of SR - HR, grey levels "
             "(lower is better)")


__all__ = ["CHANNELS", "GridError", "PeriodicExcess", "luma", "peak_ratios", "periodic_component",
           "periodic_energy", "planes", "welch_spectrum"]

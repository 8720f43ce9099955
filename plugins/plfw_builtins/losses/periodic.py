"""The ``grid`` and ``peak`` losses against periodic (checkerboard) artefacts; the measure they
build on, ``periodic_db``, and its description are in :mod:`plfw_builtins.metrics.periodic`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import plfw
from plfw import UserError
from plfw_builtins.metrics.periodic import (
    CHANNELS,
    peak_ratios,
    periodic_component,
    planes,
    welch_spectrum,
)


@dataclass
class GridParams:
    """Local sub-pixel-periodic part of SR - HR (a loss; lower is no checkerboard)."""

    period: int = 4  # the upscaling factor whose grid is penalised
    window: int = 4  # local averaging window, in periods (4 x 4 periods = 16 x 16 pixels)


class GridLoss(nn.Module):
    """Mean square of the residual's local periodic component.

    With r = SR - HR split into its period^2 sub-pixel phases (r[..., i::s, j::s]), each phase
    is averaged over windows of ``window`` periods; the periodic component is what those local
    phase means have beyond their mean over phases. That is the residual's energy at the
    grid frequencies k/s cycles per pixel (the ones ``periodic_db`` measures), localised to
    ``window * period``-pixel squares, and zero for any residual without a period-s pattern.
    """

    def __init__(self, period: int, window: int) -> None:
        super().__init__()
        self.period, self.window = period, window

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        return periodic_component((sr - hr).float(), self.period, self.window).square().mean()

    def extra_repr(self) -> str:
        return f"period={self.period}, window={self.window}"


@dataclass
class PeakParams:
    """Spectral peaks at the sub-pixel grid's frequencies above HR's (a loss; 0 = none)."""

    period: int = 4  # the upscaling factor whose grid is penalised
    tile: int = 64  # Welch tile side, as in ``periodic_db`` (crops smaller use what fits)
    channels: str = "luma"  # luma, or rgb: each colour channel against HR's (periodic_db_rgb)


class PeakLoss(nn.Module):
    """``periodic_db`` made a loss: squared excess of log peak ratios over HR's.

    The power spectra are averaged over every tile of the whole batch (a grid made by the
    network's weights sits at the same frequencies in every crop, so it adds up while the
    crops' own content averages out), then, at each grid frequency, the log of the peak's
    ratio to its ring median is compared with HR's: ``mean(relu(log r_SR - log r_HR)^2)``.

    Unlike ``grid``, which pulls SR's grid-frequency content towards HR's and so *raises*
    the peak wherever SR is smoother than HR around it (measured on the bundled models:
    README, "Checkerboard artefacts"), this asks only that SR have no more of a peak than HR.
    """

    def __init__(self, period: int, tile: int, channels: str = "luma") -> None:
        super().__init__()
        self.period, self.tile, self.channels = period, tile, channels

    def _log_ratios(self, x: Tensor) -> Tensor:
        tile = min(self.tile, min(x.shape[-2:]) // self.period * self.period)
        if tile < 4 * self.period:
            raise UserError(f"loss peak: crops {tuple(x.shape[-2:])} are smaller than 4 periods "
                            f"of {self.period} pixels")
        return torch.stack([peak_ratios(welch_spectrum(y, tile), self.period)
                            for y in planes(x, self.channels)]).clamp_min(1e-30).log()

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        with torch.no_grad():
            reference = self._log_ratios(hr)
        excess = self._log_ratios(sr) - reference
        return F.relu(excess).square().mean()

    def extra_repr(self) -> str:
        return f"period={self.period}, tile={self.tile}, channels={self.channels}"


def build_peak(p: PeakParams) -> PeakLoss:
    if p.period < 2 or p.tile < 4 * p.period or p.tile % p.period:
        raise UserError(f"loss peak: need period >= 2 and tile a multiple of period and >= 4 "
                        f"periods; got period {p.period}, tile {p.tile}")
    if p.channels not in CHANNELS:
        raise UserError(f"loss peak: channels must be one of {', '.join(CHANNELS)}; got "
                        f"{p.channels!r}")
    return PeakLoss(p.period, p.tile, p.channels)


def build_grid(p: GridParams) -> GridLoss:
    if p.period < 2 or p.window < 1:
        raise UserError(f"loss grid: need period >= 2 and window >= 1; got period {p.period}, "
                        f"window {p.window}")
    return GridLoss(p.period, p.window)


@plfw.hookimpl
def plfw_register_losses(register: Any) -> None:
    register("grid", build_grid, GridParams,
             "sub-pixel-periodic part of SR - HR: a penalty on checkerboard artefacts")
    register("peak", build_peak, PeakParams,
             "spectral peaks at the sub-pixel grid's frequencies above HR's: periodic_db as "
             "a loss")


__all__ = ["GridLoss", "PeakLoss"]

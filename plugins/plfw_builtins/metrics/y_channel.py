"""Built-in metrics: PSNR and SSIM on the Y channel, as the SR papers report them.

Both cut ``border`` pixels from each side before scoring; the paper uses border = scale (4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

import plfw
from plfw import UserError, psnr_y, ssim_y


@dataclass
class YMetricParams:
    border: int = 4


class YMetric:
    """A named (sr, hr) -> float score on single CHW images in [0, 1]; higher is better."""

    higher_is_better = True
    networks: tuple[str, ...] = ()  # feature extractors whose weights it uses: none

    def __init__(self, name: str, fn: Callable[[torch.Tensor, torch.Tensor, int], float],
                 border: int, label: str, format: str) -> None:
        self.name, self._fn, self.border = name, fn, border
        self.label, self.format = label, format  # how tables head and print it

    def __call__(self, sr: torch.Tensor, hr: torch.Tensor) -> float:
        return self._fn(sr, hr, self.border)

    def __repr__(self) -> str:
        return f"{self.name}(border={self.border})"


def _factory(name: str, fn: Callable[[torch.Tensor, torch.Tensor, int], float], label: str,
             format: str) -> Callable[[YMetricParams], YMetric]:
    def build(params: YMetricParams) -> YMetric:
        if params.border < 0:
            raise UserError(f"metric '{name}': border must be >= 0, got {params.border}")
        return YMetric(name, fn, params.border, label, format)

    return build


@plfw.hookimpl
def plfw_register_metrics(register: Any) -> None:
    register("psnr_y", _factory("psnr_y", psnr_y, "PSNR-Y [dB]", "{:.2f}"), YMetricParams,
             "PSNR [dB] on BT.601 Y of 8-bit-quantized images, peak 255, border cropped")
    register("ssim_y", _factory("ssim_y", ssim_y, "SSIM-Y", "{:.4f}"), YMetricParams,
             "SSIM (Wang et al. ssim_index.m) on BT.601 Y of 8-bit-quantized images, "
             "border cropped")

"""The ``ldl`` loss: locally discriminative learning (Liang et al., "Details or Artifacts: A
Locally Discriminative Learning Approach to Realistic Image Super-Resolution", CVPR 2022).

GAN-SR makes two kinds of high-frequency content: real detail and artefacts. LDL tells them
apart by where the generator is unstable: an artefact is where the current generator's residual
``r = sum_c |HR - SR|`` is larger than that of its exponential moving average (the EMA model is
the stable reference) and where ``r`` varies strongly in a small window. The artefact map is

    M = var(r over the whole image)^(1/5) * localvar_k(r),   M = 0 where r < r_EMA,

with ``localvar_k`` the variance in a ``k x k`` window (k = 7 in the paper; reflected borders;
both variances are sample variances, n - 1 in the denominator, as in the authors' code),
computed without gradient; the loss is ``criterion(M * SR, M * HR)`` (L1 in the paper), so only
the artefact pixels are pulled towards HR. Images are mapped to [0, 1] first.

The loss needs the EMA generator's output for the same LR batch: it declares
``needs_ema = True`` and is called as ``loss(sr, hr, ema_sr=...)``; the trainer then runs the
EMA model on each batch (``train.ema`` must be above 0; the paper uses 0.999).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

import plfw
from plfw import UserError, suggest
from plfw_builtins.losses.common import UnitRange, fp32

CRITERIA = {"l1": F.l1_loss, "mse": F.mse_loss}


@dataclass
class LDLParams:
    """LDL's artefact-map loss against the EMA generator (Liang et al., CVPR 2022)."""

    kernel: int = 7  # window of the local variance (odd)
    criterion: str = "l1"  # l1 (the paper) | mse


def local_variance(r: Tensor, kernel: int) -> Tensor:
    """Sample variance (n - 1 in the denominator, as the paper's code) of ``r`` (N, 1, H, W)
    in each ``kernel x kernel`` window, borders reflected."""
    pad, n = kernel // 2, kernel * kernel
    x = F.pad(r, (pad, pad, pad, pad), mode="reflect")
    mean = F.avg_pool2d(x, kernel, stride=1)
    second = F.avg_pool2d(x * x, kernel, stride=1)
    return ((second - mean * mean) * (n / (n - 1))).clamp_min(0)


def artefact_map(sr: Tensor, hr: Tensor, ema_sr: Tensor, kernel: int) -> Tensor:
    """LDL's refined artefact map M (N, 1, H, W) for images in [0, 1]."""
    r = (hr - sr).abs().sum(1, keepdim=True)
    r_ema = (hr - ema_sr).abs().sum(1, keepdim=True)
    global_weight = r.var(dim=(1, 2, 3), keepdim=True).pow(0.2)
    weight = global_weight * local_variance(r, kernel)
    return weight * (r >= r_ema)


class LDLLoss(UnitRange):
    name = "ldl"
    needs_ema = True

    def __init__(self, kernel: int, criterion: str) -> None:
        super().__init__()
        self.kernel, self.criterion = kernel, criterion

    def forward(self, sr: Tensor, hr: Tensor, ema_sr: Tensor | None = None) -> Tensor:
        if ema_sr is None:
            raise RuntimeError("loss ldl needs the EMA generator's output (ema_sr=...)")
        with fp32(sr):
            sr01, hr01 = self.unit(sr), self.unit(hr)
            with torch.no_grad():
                weight = artefact_map(sr01.detach(), hr01, self.unit(ema_sr), self.kernel)
            return CRITERIA[self.criterion](weight * sr01, weight * hr01)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, criterion={self.criterion}, {super().extra_repr()}"


def build_ldl(p: LDLParams) -> LDLLoss:
    if p.kernel < 3 or p.kernel % 2 == 0:
        raise UserError(f"loss ldl: kernel must be odd and >= 3, got {p.kernel}")
    if p.criterion not in CRITERIA:
        raise UserError(f"loss ldl: unknown criterion '{p.criterion}'"
                        f"{suggest(p.criterion, CRITERIA)}")
    return LDLLoss(p.kernel, p.criterion)


@plfw.hookimpl
def plfw_register_losses(register: Any) -> None:
    register("ldl", build_ldl, LDLParams,
             "LDL: L1 on the artefact map from local residual variance, against the EMA "
             "generator (Liang et al., CVPR 2022); needs train.ema > 0")


__all__ = ["LDLLoss", "artefact_map", "local_variance"]

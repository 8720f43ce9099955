"""The loss ``lpips``: the full LPIPS distance (Zhang et al., CVPR 2018; trunk and heads of
:mod:`plfw_builtins.metrics.lpips`) as a training loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

import plfw
from plfw import (
    Registry,
    UserError,
    suggest,
)
from plfw_builtins.metrics.lpips import LPIPSNet, lpips_net


@dataclass
class LPIPSLossParams:
    """The LPIPS distance (trunk + heads) as a loss; network: st_lpips_alex | st_lpips_vgg |
    alexnet (LPIPS-Alex) | vgg16 (LPIPS-VGG), or {name: ..., weights: ...}."""

    network: Any = "st_lpips_alex"


LOSS_NETWORKS = {"st_lpips_alex": "st_lpips_alex", "st_lpips_vgg": "st_lpips_vgg",
                 "alexnet": "lpips_alex", "vgg16": "lpips_vgg"}


class LPIPSLoss(nn.Module):
    """Mean LPIPS distance of a batch; images arrive in the generator's range (set by the
    trainer through ``set_image_range``) and are mapped to [0, 1] first."""

    def __init__(self, net: LPIPSNet) -> None:
        super().__init__()
        self.net = net
        self.lo, self.hi = 0.0, 1.0

    def set_image_range(self, lo: float, hi: float) -> None:
        self.lo, self.hi = float(lo), float(hi)

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        def unit(t: Tensor) -> Tensor:
            return ((t - self.lo) / (self.hi - self.lo)).clamp(0, 1)

        return self.net(unit(sr), unit(hr.detach())).mean()


def build_lpips_loss(p: LPIPSLossParams, registry: Registry | None = None) -> LPIPSLoss:
    spec = p.network if isinstance(p.network, dict) else {"name": p.network}
    name, weights = spec.get("name"), spec.get("weights", "default")
    extra = sorted(set(spec) - {"name", "weights"})
    if extra:
        raise UserError(f"loss 'lpips': network takes only name and weights, got "
                        f"{', '.join(extra)}")
    if name not in LOSS_NETWORKS:
        raise UserError(f"loss 'lpips': unknown network '{name}'"
                        f"{suggest(str(name), LOSS_NETWORKS)}")
    return LPIPSLoss(lpips_net(LOSS_NETWORKS[name], str(weights), registry))


@plfw.hookimpl
def plfw_register_losses(register: Any) -> None:
    register("lpips", build_lpips_loss, LPIPSLossParams, (LPIPSLossParams.__doc__ or "").strip())


__all__ = ["LPIPSLoss"]

"""The SRGAN paper's networks (Ledig et al., CVPR 2017): the SRResNet generator, registered
as ``srresnet`` (the discriminator is :mod:`plfw_builtins.discriminators.srgan`).

Choices the paper leaves open, made here:
- PReLU is channel-wise, the default of the PReLU paper (He et al. 2015) it cites.
- A convolution directly followed by batch norm has no bias (BN's shift makes it redundant);
  with ``batch_norm: false`` every convolution keeps its bias.
- The discriminator returns the logit, not the sigmoid: the adversarial losses apply the sigmoid
  inside a log-sum-exp (``binary_cross_entropy_with_logits``), which stays finite where
  ``log(sigmoid(x))`` underflows.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import plfw
from plfw import Register, UserError
from plfw import matlab_imresize as imresize

SCALES = (2, 4, 8)


RESIDUALS = ("none", "bicubic")


class ResidualBlock(nn.Module):
    """conv-BN-PReLU-conv-BN with an identity skip."""

    def __init__(self, channels: int, batch_norm: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *conv_bn(channels, channels, 3, batch_norm),
            plfw.PReLU(channels),
            *conv_bn(channels, channels, 3, batch_norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def conv_bn(cin: int, cout: int, k: int, batch_norm: bool, stride: int = 1) -> list[nn.Module]:
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=not batch_norm)
    return [conv, nn.BatchNorm2d(cout)] if batch_norm else [conv]


@torch.no_grad()
def icnr_(weight: torch.Tensor, factor: int) -> torch.Tensor:
    """ICNR (Aitken et al. 2017, "Checkerboard artifact free sub-pixel convolution"): initialise
    the convolution before a ``PixelShuffle(factor)`` so that its ``factor**2`` sub-filters per
    output channel are equal copies of one Kaiming-initialised filter. The upsampling then starts
    as a nearest-neighbour upscale of learned features, with no sub-pixel grid, instead of the
    checkerboard a random initialisation gives."""
    out_ch = weight.shape[0]
    if out_ch % (factor * factor):
        raise ValueError(f"ICNR: {out_ch} output channels are not a multiple of {factor}^2")
    base = torch.empty(out_ch // (factor * factor), *weight.shape[1:], dtype=weight.dtype,
                       device=weight.device)
    nn.init.kaiming_normal_(base)
    # PixelShuffle reads channel c * factor^2 + k as sub-position k of output channel c.
    weight.copy_(base.repeat_interleave(factor * factor, dim=0))
    return weight


class SRResNet(nn.Module):
    """The paper's generator: LR RGB in [0, 1] -> SR RGB in ``output_range``, ``scale`` x larger.

    With ``residual="bicubic"`` the network only learns a correction to a MATLAB-style bicubic
    upscale of its input (its last convolution starts at zero, so training starts exactly at
    bicubic). That is not in the paper; it lets a small network beat bicubic within minutes on
    a CPU, which is what the quickstart config uses it for.
    """

    #: LR pixels beyond a ``keep`` region that the upsampling layers read: x4, a 3x3 conv at
    #: LR (1), a 3x3 conv at 2x (1/2), the moved 5x5 tail at 2x (1); rounded up, plus one.
    REACH = 4
    accepts_keep = True

    def __init__(self, scale: int = 4, blocks: int = 16, channels: int = 64,
                 batch_norm: bool = True, output_range: tuple[float, float] = (-1.0, 1.0),
                 residual: str = "none", icnr: bool = False) -> None:
        super().__init__()
        where = "generator 'srresnet'"
        if scale not in SCALES:
            raise UserError(f"{where}: scale must be 2, 4 or 8, got {scale!r}")
        if blocks < 1 or channels < 1:
            raise UserError(f"{where}: blocks and channels must be >= 1, got {blocks}, {channels}")
        if len(output_range) != 2 or not output_range[0] < output_range[1]:
            raise UserError(f"{where}: output_range must be [low, high] with low < high, "
                            f"got {list(output_range)}")
        if residual not in RESIDUALS:
            raise UserError(f"{where}: residual must be 'none' or 'bicubic', got {residual!r}")
        self.scale = scale
        self.output_range = (float(output_range[0]), float(output_range[1]))
        self.residual = residual

        self.head = nn.Sequential(nn.Conv2d(3, channels, 9, padding=4), plfw.PReLU(channels))
        self.blocks = nn.Sequential(*(ResidualBlock(channels, batch_norm) for _ in range(blocks)))
        self.fuse = nn.Sequential(*conv_bn(channels, channels, 3, batch_norm))
        self.upsample = nn.Sequential(*(
            nn.Sequential(nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2),
                          plfw.PReLU(channels))
            for _ in range(int(math.log2(scale)))
        ))
        if icnr:
            for stage in self.upsample:
                icnr_(stage[0].weight, 2)
                nn.init.zeros_(stage[0].bias)  # one bias per sub-pixel would be a grid too
        self.tail = nn.Conv2d(channels, 3, 9, padding=4)
        if residual == "bicubic":
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)

    def forward(self, lr: torch.Tensor,
                keep: tuple[int, int, int, int] | None = None) -> torch.Tensor:
        """SR of ``lr``; with ``keep`` = (top, left, height, width) only the SR of that LR
        region (a tiler's core: the trunk still sees all of ``lr``, the upsampling only the
        region plus the ``REACH`` pixels its layers read)."""
        x = self.head(lr)
        x = x + self.fuse(self.blocks(x))
        s = self.scale
        if keep is not None:
            top, left, height, width = keep
            y0, x0 = max(top - self.REACH, 0), max(left - self.REACH, 0)
            y1 = min(top + height + self.REACH, lr.shape[-2])
            x1 = min(left + width + self.REACH, lr.shape[-1])
            x = x[..., y0:y1, x0:x1]
        for stage in self.upsample[:-1]:
            x = stage(x)
        # The last stage and the tail, rearranged (plfw.conv_after_shuffle): the same maths as
        # conv -> PixelShuffle(2) -> PReLU -> 9x9 tail, with the tail and PReLU applied before
        # the shuffle, on the 2x grid, where CPU kernels run them 2.3x faster (docs/bench.md).
        conv, _, prelu = self.upsample[-1]
        slope = prelu.weight
        x = plfw.prelu(conv(x), slope.repeat_interleave(4) if slope.numel() > 1 else slope)
        out = plfw.conv_after_shuffle(x, self.tail.weight, self.tail.bias, 2)
        if keep is not None:
            oy, ox = s * (top - y0), s * (left - x0)
            out = out[..., oy:oy + s * height, ox:ox + s * width]
        if self.residual == "bicubic":
            low, high = self.output_range
            # In fp32 even under autocast: a bf16 base would cap the output's precision.
            with torch.autocast(lr.device.type, enabled=False):
                base = imresize(lr.float(), scale=s)
            if keep is not None:
                base = base[..., s * top:s * (top + height), s * left:s * (left + width)]
            out = out + low + (high - low) * base
        return out


@dataclass
class SRResNetParams:
    scale: int = 4
    blocks: int = 16
    channels: int = 64
    batch_norm: bool = True
    output_range: list[float] = field(default_factory=lambda: [-1.0, 1.0])
    residual: str = "none"
    icnr: bool = False  # ICNR init of the sub-pixel convolutions (no checkerboard at start)


def build_srresnet(p: SRResNetParams) -> SRResNet:
    return SRResNet(p.scale, p.blocks, p.channels, p.batch_norm, tuple(p.output_range),
                    p.residual, p.icnr)


def srresnet_from_state_dict(state: dict[str, torch.Tensor]
                             ) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """The srresnet spec (blocks, channels, scale, batch norm) read from a plain state dict of
    this plugin's layout (keys ``blocks.<i>.``), or None for another layout: how ``plfw
    upscale`` opens bare SRResNet weights (the ``from_state_dict`` contract in
    :mod:`plfw.core.hookspecs`)."""
    keys = list(state)
    blocks = {int(m.group(1)) for k in keys if (m := re.match(r"blocks\.(\d+)\.", k))}
    if not blocks:
        return None
    first = next((v for v in state.values() if v.dim() == 4 and v.shape[1] == 3), None)
    upsample_convs = [v for k, v in state.items() if k.startswith("upsample.") and v.dim() == 4]
    if first is None or not upsample_convs:
        raise UserError("keys like srresnet's ('blocks.0....') without its first convolution "
                        "or upsampling convolutions: not a complete srresnet state dict")
    scale = 2 ** len(upsample_convs)  # one sub-pixel x2 stage per upsampling convolution
    spec = {"name": "srresnet", "blocks": len(blocks), "channels": int(first.shape[0]),
            "scale": scale, "batch_norm": any("running_mean" in k for k in keys)}
    return spec, state


build_srresnet.from_state_dict = srresnet_from_state_dict  # type: ignore[attr-defined]


@plfw.hookimpl
def plfw_register_generators(register: Register) -> None:
    register("srresnet", build_srresnet, SRResNetParams,
             "SRResNet (Ledig et al. 2017); residual: bicubic learns a correction to bicubic")


__all__ = ["SRResNet", "conv_bn", "icnr_", "srresnet_from_state_dict"]

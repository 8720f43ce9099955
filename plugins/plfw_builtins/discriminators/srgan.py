"""The SRGAN paper's discriminator (Ledig et al., CVPR 2017), registered as ``srgan``: eight 3x3
convolutions (64 to 512 channels, stride 2 every second one), LeakyReLU 0.2, batch norm after all
but the first, then dense 1024 and dense 1. It returns the logit, not the sigmoid: the
adversarial losses apply the sigmoid inside a log-sum-exp (``binary_cross_entropy_with_logits``),
which stays finite where ``log(sigmoid(x))`` underflows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

import plfw
from plfw import Register, UserError
from plfw_builtins.generators.srresnet import conv_bn


class SRGANDiscriminator(nn.Module):
    """The paper's discriminator: 8 convs (widths c,c,2c,2c,4c,4c,8c,8c; stride 2 at every
    second), LeakyReLU 0.2, BN on all but the first, dense 1024, dense 1. Returns logits (N,)."""

    def __init__(self, input_size: int = 96, channels: int = 64, batch_norm: bool = True) -> None:
        super().__init__()
        if input_size < 16 or input_size % 16:
            raise UserError(f"discriminator 'srgan': input_size must be a multiple of 16 "
                            f"(4 stride-2 convs), got {input_size}")
        if channels < 1:
            raise UserError(f"discriminator 'srgan': channels must be >= 1, got {channels}")
        self.input_size = input_size
        widths = [channels * m for m in (1, 1, 2, 2, 4, 4, 8, 8)]
        layers: list[nn.Module] = []
        cin = 3
        for i, cout in enumerate(widths):
            stride = 2 if i % 2 else 1
            if i == 0:
                layers.append(nn.Conv2d(cin, cout, 3, padding=1))
            else:
                layers += conv_bn(cin, cout, 3, batch_norm, stride)
            # in place: the conv / BN before it needs its input for backward, not its output
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            cin = cout
        self.features = nn.Sequential(*layers)
        side = input_size // 16
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(cin * side * side, 1024), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(1024, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise UserError(
                f"discriminator 'srgan' was built for {self.input_size}x{self.input_size} input, "
                f"got {x.shape[-2]}x{x.shape[-1]}: set the discriminator's input_size to the HR "
                f"crop size"
            )
        return self.classifier(self.features(x)).squeeze(1)


@dataclass
class SRGANDiscriminatorParams:
    input_size: int = 96
    channels: int = 64
    batch_norm: bool = True


def build_srgan_discriminator(p: SRGANDiscriminatorParams) -> SRGANDiscriminator:
    return SRGANDiscriminator(p.input_size, p.channels, p.batch_norm)


@plfw.hookimpl
def plfw_register_discriminators(register: Register) -> None:
    register("srgan", build_srgan_discriminator, SRGANDiscriminatorParams,
             "SRGAN discriminator (Ledig et al. 2017), returns logits")


__all__ = ["SRGANDiscriminator"]

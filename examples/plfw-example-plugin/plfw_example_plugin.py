"""An example plfw plugin: the generator ``tiny_espcn``, the loss network ``tiny_gradients`` and
the command ``plfw edges``.

plfw imports this module through the ``plfw`` entry point in pyproject.toml and calls the
registration hooks at the bottom; each registers one component or command by name.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

import plfw
from plfw import (
    CommandRegister,
    InputSpec,
    Register,
    Registry,
    UserError,
    freeze,
    load_image_uint8,
    suggest,
)


@dataclass
class TinyESPCNParams:
    """Config keys of ``tiny_espcn``; plfw fills ``scale`` from the config's top-level scale."""

    scale: int = 4
    channels: int = 32


class TinyESPCN(nn.Module):
    """ESPCN-style generator (Shi et al., CVPR 2016): every convolution runs at LR size and a
    sub-pixel layer (PixelShuffle) makes the image ``scale`` times larger at the end. A bilinear
    skip and a zero-initialised last convolution make training start at bilinear upscaling."""

    output_range = (0.0, 1.0)  # the SR output, and the pixel targets, live in [0, 1]

    def __init__(self, scale: int, channels: int) -> None:
        super().__init__()
        self.scale = scale
        last = nn.Conv2d(channels // 2, 3 * scale**2, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.body = nn.Sequential(
            nn.Conv2d(3, channels, 5, padding=2), nn.Tanh(),
            nn.Conv2d(channels, channels // 2, 3, padding=1), nn.Tanh(),
            last, nn.PixelShuffle(scale),
        )

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(lr, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return up + self.body(lr)


def build_tiny_espcn(p: TinyESPCNParams) -> TinyESPCN:
    if p.scale < 1 or p.channels < 2:
        raise UserError(f"generator 'tiny_espcn': need scale >= 1 and channels >= 2, got "
                        f"scale={p.scale}, channels={p.channels}")
    return TinyESPCN(p.scale, p.channels)


# The network wants RGB in [-1, 1]; plfw converts its [0, 1] images with this spec.
SIGNED_RGB = InputSpec(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), name="signed_rgb")
TAPS = ("luma", "sobel", "sobel_half")


@dataclass
class TinyGradientsParams:
    """Config keys of ``tiny_gradients``; the perceptual loss sets ``taps`` from its layers."""

    taps: list[str] = field(default_factory=lambda: ["sobel"])


class TinyGradients(nn.Module):
    """A fixed loss network: BT.601 luma, then Sobel x/y responses at full and half resolution.
    Comparing these maps weighs edge errors (blur, shifted edges) above flat-area colour errors."""

    input_spec = SIGNED_RGB

    def __init__(self, taps: list[str]) -> None:
        super().__init__()
        self.taps = tuple(taps)
        luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
        # Constants, not weights: non-persistent buffers stay out of every state dict.
        self.register_buffer("luma_kernel", luma, persistent=False)
        self.register_buffer("sobel_kernel", torch.stack([gx, gx.T]).unsqueeze(1),
                             persistent=False)

    def _sobel(self, y: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), self.sobel_kernel)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = F.conv2d(x, self.luma_kernel)
        maps = {"luma": y, "sobel": self._sobel(y), "sobel_half": self._sobel(F.avg_pool2d(y, 2))}
        return {tap: maps[tap] for tap in self.taps}


def build_tiny_gradients(p: TinyGradientsParams) -> TinyGradients:
    for tap in p.taps:
        if tap not in TAPS:
            raise UserError(f"feature_extractor 'tiny_gradients': unknown tap '{tap}'"
                            f"{suggest(tap, TAPS)}")
    return freeze(TinyGradients(p.taps))


@plfw.hookimpl
def plfw_register_generators(register: Register) -> None:
    register("tiny_espcn", build_tiny_espcn, TinyESPCNParams,
             description="ESPCN-style sub-pixel CNN with a bilinear skip (example plugin)")


@plfw.hookimpl
def plfw_register_feature_extractors(register: Register) -> None:
    register("tiny_gradients", build_tiny_gradients, TinyGradientsParams,
             description="fixed luma + Sobel edge maps, taps: luma, sobel, sobel_half")


def edges(args: argparse.Namespace, registry: Registry) -> int:
    """``plfw edges IMAGE``: how strongly ``tiny_gradients`` sees edges in an image (the mean
    Sobel magnitude of its luma), with the registry the command was given."""
    net = registry.build("feature_extractor", {"name": "tiny_gradients", "taps": ["sobel"]},
                         "plfw edges")
    image = load_image_uint8(args.image).float() / 255  # CHW RGB in [0, 1]
    sobel = net(net.input_spec.convert(image[None]))["sobel"]
    print(f"{args.image}: mean edge strength {float(sobel.norm(dim=1).mean()):.4f}")
    return 0


@plfw.hookimpl
def plfw_register_commands(register: CommandRegister) -> None:
    parser = register("edges", edges, help="mean Sobel edge strength of an image (example)")
    parser.add_argument("image", help="an image file")

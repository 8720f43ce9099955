"""Fully convolutional discriminators: Real-ESRGAN's U-Net with spectral normalisation and the
pix2pix PatchGAN, registered as discriminators ``unet`` and ``patchgan``.

Both return a map of logits, (N, 1, h, w), instead of one logit per image: one realness value
per pixel (``unet``, h x w = the input's size) or per overlapping patch (``patchgan``). The
built-in ``adversarial`` loss flattens the logits and averages every term over all of them, so
each mode (vanilla, lsgan, hinge, relativistic) treats each position as a sample; the
relativistic average subtracts the mean logit over the whole batch and all positions.

Being fully convolutional, both take any input whose sides are a multiple of their stride (8);
``input_size`` (filled in with the HR crop by the trainer) is only checked against that at build
time, so a wrong crop is reported before training starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

import plfw
from plfw import Register, UserError

NORMS = ("batch", "instance", "none")


def _check_size(where: str, size: int | None, stride: int, minimum: int) -> None:
    if size is not None and (size < minimum or size % stride):
        raise UserError(f"{where}: input_size must be a multiple of {stride} and at least "
                        f"{minimum}, got {size}")


def _check_input(where: str, x: torch.Tensor, stride: int, minimum: int) -> None:
    h, w = x.shape[-2:]
    if h % stride or w % stride or min(h, w) < minimum:
        raise UserError(f"{where}: input {h}x{w} must have sides that are multiples of {stride} "
                        f"and at least {minimum}; use such a crop")


class UNetDiscriminator(nn.Module):
    """Real-ESRGAN's discriminator (Wang, Xie, Dong and Shan, "Real-ESRGAN: Training Real-World
    Blind Super-Resolution with Pure Synthetic Data", ICCVW 2021, sec. 4.2 and fig. 6): a U-Net
    that gives a realness value per pixel, with spectral normalisation (Miyato et al. 2018) on
    its inner convolutions to stabilise training with the stronger U-Net.

    Encoder: a 3x3 conv to c channels, then three 4x4 stride-2 convs (2c, 4c, 8c). Decoder: three
    stages of bilinear x2 upsampling and a 3x3 conv (4c, 2c, c), each added to the encoder
    feature of the same size (``skip_connection``); then two 3x3 convs (c) and a 3x3 conv to one
    channel. LeakyReLU 0.2 after every conv but the last. Spectral norm on all convs but the
    first and the last (those keep a bias; the normalised ones have none). Output (N, 1, H, W)
    logits for (N, 3, H, W) input, H and W multiples of 8.
    """

    STRIDE = 8

    def __init__(self, channels: int = 64, skip_connection: bool = True,
                 spectral: bool = True) -> None:
        super().__init__()
        c = channels

        def conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Module:
            layer = nn.Conv2d(cin, cout, k, stride, padding=1, bias=not spectral)
            return spectral_norm(layer) if spectral else layer

        self.skip_connection = skip_connection
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.down = nn.ModuleList([conv(c, 2 * c, 4, 2), conv(2 * c, 4 * c, 4, 2),
                                   conv(4 * c, 8 * c, 4, 2)])
        self.up = nn.ModuleList([conv(8 * c, 4 * c, 3), conv(4 * c, 2 * c, 3), conv(2 * c, c, 3)])
        self.refine = nn.ModuleList([conv(c, c, 3), conv(c, c, 3)])
        self.tail = nn.Conv2d(c, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input("discriminator 'unet'", x, self.STRIDE, self.STRIDE)
        act = F.leaky_relu
        skips = [act(self.head(x), 0.2)]
        for layer in self.down:
            skips.append(act(layer(skips[-1]), 0.2))
        h = skips.pop()
        for layer in self.up:
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
            h = act(layer(h), 0.2)
            skip = skips.pop()
            if self.skip_connection:
                h = h + skip
        for layer in self.refine:
            h = act(layer(h), 0.2)
        return self.tail(h)


class PatchGANDiscriminator(nn.Module):
    """The PatchGAN of pix2pix (Isola, Zhu, Zhou and Efros, "Image-to-Image Translation with
    Conditional Adversarial Networks", CVPR 2017, sec. 3.2.2 and appendix 6.1.2): a logit per
    overlapping patch. With ``layers`` = 3 it is the paper's 70x70 discriminator
    C64-C128-C256-C512: 4x4 convs, the first ``layers`` with stride 2, then one more with
    stride 1, then a 4x4 conv to one channel; LeakyReLU 0.2; no normalisation on the first
    conv, ``norm`` (batch in the paper, instance in CycleGAN) on the others; widths double up
    to 8c. Optional spectral normalisation on every conv. Receptive field 70 px for 3 layers
    (``receptive_field``), 34 for 2, 142 for 4. Output (N, 1, H/2^layers - 2, W/2^layers - 2)."""

    def __init__(self, channels: int = 64, layers: int = 3, norm: str = "batch",
                 spectral: bool = False) -> None:
        super().__init__()
        self.stride = 2**layers

        def conv(cin: int, cout: int, stride: int, bias: bool) -> nn.Module:
            layer = nn.Conv2d(cin, cout, 4, stride, padding=1, bias=bias)
            return spectral_norm(layer) if spectral else layer

        def normalise(width: int) -> list[nn.Module]:
            if norm == "batch":
                return [nn.BatchNorm2d(width)]
            if norm == "instance":
                return [nn.InstanceNorm2d(width)]
            return []

        body: list[nn.Module] = [conv(3, channels, 2, True), nn.LeakyReLU(0.2)]
        cin = channels
        for i in range(1, layers + 1):
            cout = channels * min(2**i, 8)
            body += [conv(cin, cout, 2 if i < layers else 1, norm == "none"), *normalise(cout),
                     nn.LeakyReLU(0.2)]
            cin = cout
        body.append(conv(cin, 1, 1, True))
        self.body = nn.Sequential(*body)
        rf = 1
        for m in reversed(body):
            if isinstance(m, nn.Conv2d):
                rf = (rf - 1) * m.stride[0] + m.kernel_size[0]
        self.receptive_field = rf
        #: the smallest input side that leaves a 2x2 map (instance norm needs more than 1 value)
        self.minimum = self.stride * 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input("discriminator 'patchgan'", x, self.stride, self.minimum)
        return self.body(x)


@dataclass
class UNetParams:
    """Real-ESRGAN's U-Net discriminator with spectral norm (Wang et al., ICCVW 2021):
    per-pixel logits; channels c (64 in Real-ESRGAN); skip_connection (true); spectral_norm
    (true); input_size: the HR crop (filled in by the trainer), a multiple of 8."""

    channels: int = 64
    skip_connection: bool = True
    spectral_norm: bool = True
    input_size: int | None = None


@dataclass
class PatchGANParams:
    """pix2pix PatchGAN (Isola et al., CVPR 2017): layers 3 = the 70x70 discriminator; norm
    batch | instance | none; spectral_norm (false); input_size: the HR crop, a multiple of
    2^layers and at least 4 * 2^layers."""

    channels: int = 64
    layers: int = 3
    norm: str = "batch"
    spectral_norm: bool = False
    input_size: int | None = None


def build_unet(p: UNetParams) -> UNetDiscriminator:
    where = "discriminator 'unet'"
    if p.channels < 1:
        raise UserError(f"{where}: channels must be >= 1, got {p.channels}")
    _check_size(where, p.input_size, UNetDiscriminator.STRIDE, UNetDiscriminator.STRIDE)
    return UNetDiscriminator(p.channels, p.skip_connection, p.spectral_norm)


def build_patchgan(p: PatchGANParams) -> PatchGANDiscriminator:
    where = "discriminator 'patchgan'"
    if p.channels < 1:
        raise UserError(f"{where}: channels must be >= 1, got {p.channels}")
    if not 1 <= p.layers <= 6:
        raise UserError(f"{where}: layers must be 1 to 6, got {p.layers}")
    if p.norm not in NORMS:
        raise UserError(f"{where}: norm must be batch, instance or none, got '{p.norm}'")
    _check_size(where, p.input_size, 2**p.layers, 4 * 2**p.layers)
    return PatchGANDiscriminator(p.channels, p.layers, p.norm, p.spectral_norm)


@plfw.hookimpl
def plfw_register_discriminators(register: Register) -> None:
    register("unet", build_unet, UNetParams,
             "Real-ESRGAN U-Net with spectral norm, per-pixel logits (Wang et al., ICCVW 2021)")
    register("patchgan", build_patchgan, PatchGANParams,
             "PatchGAN, logits per patch; layers 3 = 70x70 (Isola et al., pix2pix, CVPR 2017)")

"""Frequency losses of current GAN-SR training, registered as ``focal_frequency`` (Jiang et
al., ICCV 2021) and ``fdl`` (Ni et al., CVPR 2024). Like the losses of
:mod:`plfw_builtins.losses.fidelity` (whose docstring gives the shared conventions), each is
``loss(sr, hr)`` on images in the generator's range, computed on them mapped to [0, 1], and
returns an unweighted scalar; where a choice is ours, the class docstring says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import plfw
from plfw import Registry, UserError, suggest
from plfw_builtins.losses.common import UnitRange, fp32


@dataclass
class FocalFrequencyParams:
    """Focal frequency loss (Jiang et al., ICCV 2021): alpha (the weight matrix's exponent, 1 in
    the paper), patch_factor (the image is cut into patch_factor^2 patches, each transformed on
    its own), ave_spectrum (compare the batch-mean spectra), log_matrix (weights log(1 + w)),
    batch_matrix (normalise the weights by the batch's maximum instead of each spectrum's)."""

    alpha: float = 1.0
    patch_factor: int = 1
    ave_spectrum: bool = False
    log_matrix: bool = False
    batch_matrix: bool = False


class FocalFrequencyLoss(UnitRange):
    """Focal frequency loss (Jiang, Dai, Wu and Loy, "Focal Frequency Loss for Image
    Reconstruction and Synthesis", ICCV 2021, eqs. 1-4).

    Per image, channel and patch, with F the 2-D DFT of the [0, 1] image:
    d(u, v) = |F_sr(u, v) - F_hr(u, v)|^2, the spectrum weight matrix
    w(u, v) = |F_sr(u, v) - F_hr(u, v)|^alpha (``log_matrix``: log(1 + w)) divided by its maximum
    (over that spectrum, or over the whole batch with ``batch_matrix``) so that it lies in
    [0, 1], and detached (no gradient flows through the weights, as the paper specifies);
    loss = mean over batch, patches, channels and frequencies of w * d.

    Our choice: the DFT is orthonormal (divided by sqrt(H W)). The paper writes the plain DFT
    and a 1/(M N) mean; the orthonormal one only rescales that by 1/(H W) and makes the loss
    independent of the patch size: with alpha = 0 (all weights 1) it equals the MSE of the
    [0, 1] images (Parseval). Where SR equals HR at a frequency the weight there is 0 (0/0 when
    the whole spectrum agrees is taken as 0).
    """

    name = "focal_frequency"

    def __init__(self, alpha: float, patch_factor: int, ave_spectrum: bool, log_matrix: bool,
                 batch_matrix: bool) -> None:
        super().__init__()
        self.alpha, self.patch_factor = float(alpha), int(patch_factor)
        self.ave_spectrum, self.log_matrix = ave_spectrum, log_matrix
        self.batch_matrix = batch_matrix

    def spectrum(self, images: Tensor) -> Tensor:
        """Orthonormal 2-D DFT of each patch: (N, patches, C, h, w) complex."""
        x = self.unit(images)
        n, c, h, w = x.shape
        p = self.patch_factor
        if h % p or w % p:
            raise UserError(f"loss focal_frequency: image {h}x{w} does not split into "
                            f"patch_factor={p} patches per side; use a crop divisible by {p}")
        x = x.reshape(n, c, p, h // p, p, w // p).permute(0, 2, 4, 1, 3, 5)
        return torch.fft.fft2(x.reshape(n, p * p, c, h // p, w // p), norm="ortho")

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        f_sr, f_hr = self.spectrum(sr), self.spectrum(hr.detach())
        if self.ave_spectrum:
            f_sr, f_hr = f_sr.mean(0, keepdim=True), f_hr.mean(0, keepdim=True)
        diff = f_sr - f_hr
        distance = diff.real.square() + diff.imag.square()
        with torch.no_grad():
            weight = distance.sqrt() ** self.alpha
            if self.log_matrix:
                weight = torch.log1p(weight)
            peak = (weight.amax() if self.batch_matrix
                    else weight.amax(dim=(-2, -1), keepdim=True))
            weight = torch.nan_to_num(weight / peak, nan=0.0).clamp(0, 1)
        return (weight * distance).mean()

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, patch_factor={self.patch_factor}, "
                f"ave_spectrum={self.ave_spectrum}, log_matrix={self.log_matrix}, "
                f"batch_matrix={self.batch_matrix}")


def build_focal_frequency(p: FocalFrequencyParams) -> FocalFrequencyLoss:
    if not p.alpha >= 0:
        raise UserError(f"loss focal_frequency.alpha: must be >= 0, got {p.alpha}")
    if p.patch_factor < 1:
        raise UserError(f"loss focal_frequency.patch_factor: must be >= 1, got {p.patch_factor}")
    return FocalFrequencyLoss(p.alpha, p.patch_factor, p.ave_spectrum, p.log_matrix,
                              p.batch_matrix)


#: The paper's VGG19 taps: the last ReLU of each of the five stages.
FDL_VGG19_LAYERS = {"relu1_2": 1.0, "relu2_2": 1.0, "relu3_4": 1.0, "relu4_4": 1.0,
                    "relu5_4": 1.0}


LAYOUTS = ("auto", "nchw", "nhwc", "tokens")


@dataclass
class FDLParams:
    """Frequency distribution loss (Ni et al., CVPR 2024) over a loss network's features.

    network: any feature extractor, a name or {name: ..., params except taps} (vgg19 with its
    default Caffe weights works offline; the paper used torchvision's ImageNet VGG19:
    {name: vgg19, weights: torchvision}; DINOv2: {name: 'timm:vit_small_patch14_dinov2',
    model_kwargs: {dynamic_img_size: true}, weights: timm}); layers: tap -> weight (default: the
    five VGG19 stages for vgg19, else the network's own default taps); patch: side of the local
    patches projected (5 in the paper); stride: their step; projections: random directions per
    tap (256); phase_weight: the phase term's weight (1.0); resample: draw new directions every
    call (from the run's RNG) instead of one fixed set drawn from ``seed``; layout: how a tap's
    tensor is laid out (auto: 4-D NCHW, 3-D tokens (N, L, C) of a ViT; nhwc for Swin-like
    models). Cost: with the defaults, one 96x96 crop takes 62 GFLOP forward (two VGG19
    passes to relu5_4, 14; the rest the projections, most at relu1_2), about 4x the VGG54
    perceptual loss; fewer projections or stride 2 cut it."""

    network: Any = "vgg19"
    layers: dict[str, float] | None = None
    patch: int = 5
    stride: int = 1
    projections: int = 256
    phase_weight: float = 1.0
    resample: bool = False
    seed: int = 0
    layout: str = "auto"


def sliced_wasserstein(x: Tensor, y: Tensor, directions: Tensor, stride: int) -> Tensor:
    """Per-image sliced 1-Wasserstein distance between the local patches of ``x`` and ``y``
    (N, C, H, W): every patch (C x k x k, ``directions`` (P, C, k, k) of unit norm) is projected
    onto each direction; the two sets of projections of an image are sorted and compared
    position by position (the optimal 1-D transport), |.| averaged over positions and
    directions. Returns (N,)."""
    px = F.conv2d(x, directions, stride=stride).flatten(2).sort(dim=-1).values
    py = F.conv2d(y, directions, stride=stride).flatten(2).sort(dim=-1).values
    return (px - py).abs().mean(dim=(1, 2))


def unit_directions(count: int, channels: int, patch: int,
                    generator: torch.Generator | None = None) -> Tensor:
    """``count`` random directions (Gaussian, normalised to unit length) in C x k x k."""
    d = torch.randn(count, channels * patch * patch, generator=generator)
    return (d / d.norm(dim=1, keepdim=True)).reshape(count, channels, patch, patch)


class FDLLoss(UnitRange):
    """Frequency distribution loss (Ni, Wu, Wang, Yang, Wang and Ma, "Misalignment-Robust
    Frequency Distribution Loss for Image Transformation", CVPR 2024).

    For each tap t of the loss network, the features of SR and HR are transformed by a 2-D DFT
    over their spatial axes; the amplitude |F| and the phase arg F of each are compared as
    distributions, not position by position (which is what makes the loss tolerant to
    misaligned pairs), with a sliced Wasserstein distance: random unit directions in the space
    of C x k x k patches, the 1-D Wasserstein-1 distance between the projected SR and HR
    patches along each, averaged (:func:`sliced_wasserstein`).

    loss = mean over images of sum_t weight_t * (SWD(|F_sr|, |F_hr|) + phase_weight *
    SWD(arg F_sr, arg F_hr)), one set of directions per tap shared by both terms.

    The HR pass runs without a graph; the SR pass keeps one (the loss network is frozen).
    """

    name = "fdl"

    def __init__(self, network: nn.Module, layers: dict[str, float], patch: int, stride: int,
                 projections: int, phase_weight: float, resample: bool, seed: int,
                 layout: str) -> None:
        super().__init__()
        self.network = network
        self.layers = dict(layers)
        self.patch, self.stride, self.projections = patch, stride, projections
        self.phase_weight, self.resample, self.seed = float(phase_weight), resample, seed
        self.layout = layout
        #: the fixed directions per tap (``resample: false``), drawn on first use from ``seed``
        #: (they depend on the tap's channel count); rebuilt, never saved
        self.fixed: dict[str, Tensor] = {}

    def directions(self, tap: str, channels: int, device: torch.device) -> Tensor:
        if self.resample:  # the global RNG, which checkpoints save: resume stays exact
            return unit_directions(self.projections, channels, self.patch).to(device)
        d = self.fixed.get(tap)
        if d is None or d.shape[1] != channels:
            index = list(self.layers).index(tap)
            generator = torch.Generator().manual_seed(self.seed * 1000003 + index)
            d = unit_directions(self.projections, channels, self.patch, generator)
        self.fixed[tap] = d = d.to(device)
        return d

    def _features(self, images: Tensor) -> dict[str, Tensor]:
        x01 = self.unit(images)
        feats = self.network(self.network.input_spec.convert(x01))
        return {t: as_map(feats[t], x01.shape[-2:], self.layout, self.network, t)
                for t in self.layers}

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        with torch.no_grad():
            target = self._features(hr)
        pred = self._features(sr)
        total = sr.new_zeros((), dtype=torch.float32)
        for tap, weight in self.layers.items():
            h, w = pred[tap].shape[-2:]
            if min(h, w) < self.patch:
                raise UserError(f"loss fdl: tap '{tap}' is {h}x{w}, smaller than patch "
                                f"{self.patch}; use a smaller patch, an earlier tap or a "
                                f"larger crop")
            with fp32(sr):
                fs, fh = torch.fft.fft2(pred[tap].float()), torch.fft.fft2(target[tap].float())
                d = self.directions(tap, fs.shape[1], fs.device)
                amplitude = sliced_wasserstein(fs.abs(), fh.abs(), d, self.stride)
                phase = sliced_wasserstein(fs.angle(), fh.angle(), d, self.stride)
            total = total + weight * (amplitude + self.phase_weight * phase).mean()
        return total

    def extra_repr(self) -> str:
        return (f"layers={self.layers}, patch={self.patch}, stride={self.stride}, "
                f"projections={self.projections}, phase_weight={self.phase_weight}, "
                f"resample={self.resample}")


def as_map(f: Tensor, image_hw: Any, layout: str, network: nn.Module, tap: str) -> Tensor:
    """A tap's tensor as an (N, C, h, w) feature map. Tokens (N, L, C) lose their prefix tokens
    (class, registers: the model's ``num_prefix_tokens`` where it has one) and are laid on the
    patch grid of the image's aspect ratio."""
    if layout == "auto":
        layout = "tokens" if f.dim() == 3 else "nchw"
    if layout == "nchw" and f.dim() == 4:
        return f
    if layout == "nhwc" and f.dim() == 4:
        return f.permute(0, 3, 1, 2)
    if layout == "tokens" and f.dim() == 3:
        n, length, c = f.shape
        inner = getattr(network, "net", network)
        prefix = getattr(inner, "num_prefix_tokens", None)
        height, width = (int(s) for s in image_hw)
        for k in ([prefix] if prefix is not None else range(0, 17)):
            cells = length - k
            h = round(math.sqrt(cells * height / width)) if cells > 0 else 0
            if h > 0 and cells % h == 0:
                return f[:, k:].transpose(1, 2).reshape(n, c, h, cells // h)
        raise UserError(f"loss fdl: tap '{tap}' has {length} tokens, which do not lie on a grid "
                        f"of the image's {height}x{width} shape; set layout")
    raise UserError(f"loss fdl: tap '{tap}' is a {f.dim()}-D tensor {tuple(f.shape)}, not what "
                    f"layout '{layout}' expects")


def _network_spec(network: Any, taps: list[str] | None, where: str) -> dict[str, Any]:
    if isinstance(network, str):
        spec: dict[str, Any] = {"name": network}
    elif isinstance(network, dict) and "name" in network:
        if "taps" in network:
            raise UserError(f"{where}: do not set 'taps' here; the taps are the keys of layers")
        spec = dict(network)
    else:
        raise UserError(f"{where}: expected a feature extractor name or a mapping with 'name', "
                        f"got {network!r}")
    return spec if taps is None else {**spec, "taps": taps}


def build_fdl(p: FDLParams, registry: Registry | None = None) -> FDLLoss:
    where = "loss fdl.network"
    for key, value, low in (("patch", p.patch, 1), ("stride", p.stride, 1),
                            ("projections", p.projections, 1)):
        if value < low:
            raise UserError(f"loss fdl.{key}: must be >= {low}, got {value}")
    if p.layout not in LAYOUTS:
        raise UserError(f"loss fdl.layout: unknown value '{p.layout}'{suggest(p.layout, LAYOUTS)}")
    if not p.phase_weight >= 0:
        raise UserError(f"loss fdl.phase_weight: must be >= 0, got {p.phase_weight}")
    name = p.network if isinstance(p.network, str) else (p.network or {}).get("name")
    layers = p.layers
    if layers is None and name == "vgg19":
        layers = FDL_VGG19_LAYERS
    if layers is not None and not layers:
        raise UserError("loss fdl.layers: give at least one tap, e.g. {relu3_4: 1.0}")
    spec = _network_spec(p.network, None if layers is None else list(layers), where)
    network = (registry.build("feature_extractor", spec, where) if registry is not None
               else plfw.build("feature_extractor", spec, where))
    if layers is None:  # the network's own default taps, weight 1 each
        layers = dict.fromkeys(network.taps, 1.0)
    return FDLLoss(network, layers, p.patch, p.stride, p.projections, p.phase_weight,
                   p.resample, p.seed, p.layout)


@plfw.hookimpl
def plfw_register_losses(register: Any) -> None:
    register("focal_frequency", build_focal_frequency, FocalFrequencyParams,
             "focal frequency loss: spectrum error weighted by itself (Jiang et al., ICCV 2021)")
    register("fdl", build_fdl, FDLParams,
             "frequency distribution loss: sliced Wasserstein distance of the amplitude and "
             "phase spectra of loss-network features (Ni et al., CVPR 2024)")


__all__ = ["FDLLoss", "FocalFrequencyLoss", "as_map", "sliced_wasserstein", "unit_directions"]

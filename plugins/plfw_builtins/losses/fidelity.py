"""Losses of current GAN-SR training that compare images directly: Charbonnier, MS-SSIM and
DISTS, registered as ``charbonnier``, ``ms_ssim`` and ``dists``.

Each is called as ``loss(sr, hr)`` on images in the generator's output range (the trainer calls
``set_image_range(lo, hi)`` first; the default is [0, 1]); every definition below is applied to
the images mapped to [0, 1], so a loss has the same value whether the generator works in [0, 1]
or in [-1, 1]. Each returns an unweighted scalar (the config's ``weight`` multiplies it).

Written from the papers' definitions; where a choice is ours (a normalisation, a default), the
class docstring says so.

The frequency losses (focal frequency, FDL) are in :mod:`plfw_builtins.losses.frequency`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

import plfw
from plfw import Registry, UserError
from plfw_builtins.losses.common import UnitRange, fp32
from plfw_builtins.metrics.lpips import DISTSMetric, PerceptualMetricParams, build_dists


@dataclass
class CharbonnierParams:
    """Charbonnier penalty sqrt((SR - HR)^2 + eps^2) on [0, 1] images (Lai et al., LapSRN,
    CVPR 2017); eps 1e-3 as in the paper."""

    eps: float = 1e-3


class CharbonnierLoss(UnitRange):
    """Charbonnier loss (Lai et al., "Deep Laplacian Pyramid Networks for Fast and Accurate
    Super-Resolution", CVPR 2017, eq. 1): rho(x) = sqrt(x^2 + eps^2), a differentiable L1, averaged
    over every pixel and channel of the batch (the paper sums over pixels and averages over the
    batch; the mean only rescales it). x = SR - HR with both in [0, 1]."""

    name = "charbonnier"

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = float(eps)

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        diff = self.unit(sr) - self.unit(hr)
        return (diff.square() + self.eps**2).sqrt().mean()

    def extra_repr(self) -> str:
        return f"eps={self.eps}, {super().extra_repr()}"


def build_charbonnier(p: CharbonnierParams) -> CharbonnierLoss:
    if not p.eps > 0:
        raise UserError(f"loss charbonnier.eps: must be > 0, got {p.eps}")
    return CharbonnierLoss(p.eps)


#: MS-SSIM's scale weights (Wang, Simoncelli and Bovik 2003), finest scale first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


@dataclass
class MSSSIMParams:
    """1 - MS-SSIM (Wang, Simoncelli and Bovik 2003) by piq on [0, 1] images. The image side
    must be at least (kernel_size - 1) * 2^(scales - 1) + 1: 161 px for the paper's 5 scales and
    11-px kernel. On smaller crops give fewer scale_weights (piq renormalises them to sum 1):
    the paper's first four [0.0448, 0.2856, 0.3001, 0.2363] need 81 px (96-px crops), the first
    three 41 px."""

    scale_weights: list[float] = field(default_factory=lambda: list(MS_SSIM_WEIGHTS))
    kernel_size: int = 11
    kernel_sigma: float = 1.5
    k1: float = 0.01
    k2: float = 0.03


class MSSSIMLoss(UnitRange):
    """1 - MS-SSIM (Wang, Simoncelli and Bovik, "Multiscale structural similarity for image
    quality assessment", Asilomar 2003) through ``piq.MultiScaleSSIMLoss``, averaged over the
    batch. SR and HR are mapped to [0, 1] and clamped to it (piq accepts nothing outside;
    pixels the generator puts outside get no gradient from this loss)."""

    name = "ms_ssim"

    def __init__(self, scale_weights: list[float], kernel_size: int, kernel_sigma: float,
                 k1: float, k2: float) -> None:
        super().__init__()
        import piq

        self.scale_weights = [float(w) for w in scale_weights]
        self.kernel_size = kernel_size
        self.min_size = (kernel_size - 1) * 2 ** (len(self.scale_weights) - 1) + 1
        self.piq = piq.MultiScaleSSIMLoss(kernel_size=kernel_size, kernel_sigma=kernel_sigma,
                                          k1=k1, k2=k2,
                                          scale_weights=torch.tensor(self.scale_weights),
                                          reduction="mean", data_range=1.0)

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        h, w = sr.shape[-2:]
        if min(h, w) < self.min_size:
            if min(h, w) < self.kernel_size:
                raise UserError(f"loss ms_ssim: {h}x{w} images are smaller than the "
                                f"{self.kernel_size}-px SSIM window; use a larger crop")
            fit = int(math.log2((min(h, w) - 1) / max(self.kernel_size - 1, 1))) + 1
            raise UserError(f"loss ms_ssim: {h}x{w} images are too small for "
                            f"{len(self.scale_weights)} scales (needs {self.min_size} px); give "
                            f"at most {fit} scale_weights, e.g. "
                            f"{list(MS_SSIM_WEIGHTS[:fit])}, or a larger crop")
        weights = self.piq.scale_weights
        if weights.device != sr.device:
            self.piq.scale_weights = weights.to(sr.device)
        with fp32(sr):
            return self.piq(self.unit(sr).clamp(0, 1), self.unit(hr.detach()).clamp(0, 1))

    def extra_repr(self) -> str:
        return f"scale_weights={self.scale_weights}, kernel_size={self.kernel_size}"


def build_ms_ssim(p: MSSSIMParams) -> MSSSIMLoss:
    if not p.scale_weights or any(not w >= 0 for w in p.scale_weights) or not sum(
            p.scale_weights) > 0:
        raise UserError(f"loss ms_ssim.scale_weights: give one or more non-negative weights, "
                        f"got {p.scale_weights}")
    if p.kernel_size < 1 or p.kernel_size % 2 == 0:
        raise UserError(f"loss ms_ssim.kernel_size: must be odd and >= 1, got {p.kernel_size}")
    try:
        import piq  # noqa: F401
    except ImportError:
        raise UserError("loss ms_ssim: needs piq; pip install piq") from None
    return MSSSIMLoss(p.scale_weights, p.kernel_size, p.kernel_sigma, p.k1, p.k2)


@dataclass
class DISTSLossParams:
    """DISTS (Ding et al., TPAMI 2020) as a loss; weights: its VGG16 trunk's (default:
    torchvision's ImageNet weights from the hub cache, a resolve-weights plugin or a download; a
    file; or none), the alpha/beta weights come from the DISTS_pytorch wheel."""

    weights: str = "default"


class DISTSLoss(UnitRange):
    """The DISTS distance (Ding, Ma, Wang and Simoncelli, "Image Quality Assessment: Unifying
    Structure and Texture Similarity", TPAMI 2020) of each SR/HR pair, averaged over the batch,
    with gradients to SR.

    The network and weights are the ``dists`` metric's (``plfw_builtins.metrics.lpips``): its VGG16
    trunk with L2 pooling and its alpha/beta. Per pair, for stage 0 (the [0, 1] image) and each
    of the five taps, per channel: means mu, variances sigma^2 and covariance over the
    positions; S1 = (2 mu_x mu_y + c) / (mu_x^2 + mu_y^2 + c), S2 = (2 sigma_xy + c) /
    (sigma_x^2 + sigma_y^2 + c), c = 1e-6; distance = 1 - sum(alpha S1 + beta S2) with alpha
    and beta normalised to sum 1 together. Unlike the metric, no 8-bit rounding, border or
    tiling: the loss sees the crops as they are."""

    name = "dists"

    def __init__(self, metric: DISTSMetric) -> None:
        super().__init__()
        self.trunk = metric.trunk
        self.register_buffer("alpha", torch.cat(metric.alpha).float(), persistent=False)
        self.register_buffer("beta", torch.cat(metric.beta).float(), persistent=False)
        self.channels = list(metric.channels)

    def _stages(self, x01: Tensor) -> list[Tensor]:
        return [x01, *(f for _, f in self.trunk.iter_taps(self.trunk.input_spec.convert(x01)))]

    def distance(self, x01: Tensor, y01: Tensor) -> Tensor:
        """Per-pair DISTS distance (N,) of [0, 1] batches; no graph for ``y01``."""
        with torch.no_grad():
            ys = self._stages(y01)
        xs = self._stages(x01)
        c = 1e-6
        alphas = self.alpha.split(self.channels)
        betas = self.beta.split(self.channels)
        similarity = x01.new_zeros(x01.shape[0])
        for fx, fy, alpha, beta in zip(xs, ys, alphas, betas, strict=True):
            fx, fy = fx.float().flatten(2), fy.float().flatten(2)
            mx, my = fx.mean(-1), fy.mean(-1)
            vx = (fx - mx[..., None]).square().mean(-1)
            vy = (fy - my[..., None]).square().mean(-1)
            cov = ((fx - mx[..., None]) * (fy - my[..., None])).mean(-1)
            s1 = (2 * mx * my + c) / (mx.square() + my.square() + c)
            s2 = (2 * cov + c) / (vx + vy + c)
            similarity = similarity + (s1 * alpha).sum(1) + (s2 * beta).sum(1)
        return 1 - similarity

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        return self.distance(self.unit(sr), self.unit(hr.detach())).mean()


def build_dists_loss(p: DISTSLossParams, registry: Registry | None = None) -> DISTSLoss:
    metric = build_dists(PerceptualMetricParams(weights=p.weights), registry)
    return DISTSLoss(metric)


@plfw.hookimpl
def plfw_register_losses(register: Any) -> None:
    register("charbonnier", build_charbonnier, CharbonnierParams,
             "Charbonnier sqrt(d^2 + eps^2), a smooth L1 (Lai et al., LapSRN, CVPR 2017)")
    register("ms_ssim", build_ms_ssim, MSSSIMParams,
             "1 - MS-SSIM by piq (Wang et al. 2003); fewer scale_weights for crops < 161 px")
    register("dists", build_dists_loss, DISTSLossParams,
             "the DISTS distance as a loss (Ding et al., TPAMI 2020; the dists metric's network)")


__all__ = ["CharbonnierLoss", "DISTSLoss", "MSSSIMLoss"]

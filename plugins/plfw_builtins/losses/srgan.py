"""Built-in losses: pixel (mse, l1), perceptual (feature-space), adversarial and total variation.

Every loss returns an unweighted scalar; the per-loss ``weight`` from the config is applied by the
trainer, so one loss module can serve several configs unchanged.
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

CRITERIA = {"mse": F.mse_loss, "l1": F.l1_loss}


class PixelLoss(nn.Module):
    """Mean squared or absolute difference between SR and HR, in the generator's output range."""

    def __init__(self, criterion: str) -> None:
        super().__init__()
        self.criterion = criterion

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        return CRITERIA[self.criterion](sr, hr)

    def extra_repr(self) -> str:
        return self.criterion


def _check_choice(where: str, value: str, choices: Any) -> None:
    if value not in choices:
        raise UserError(f"{where}: unknown value '{value}'{suggest(str(value), choices)}")


DEFAULT_LAYERS = {"relu5_4": 1.0}
#: SRGAN's rescaling of the VGG feature maps ("to obtain VGG losses of a scale that is
#: comparable to the MSE loss"). The default was 1.0 before issue 36: with Caffe VGG19 and mse
#: that made the content loss 12.75^2 = 163 times the paper's
PAPER_FEATURE_SCALE = 1 / 12.75


@dataclass
class PerceptualParams:
    """Feature-space loss; the defaults are the paper's VGG54: Caffe VGG19 relu5_4, mse, /12.75."""

    network: Any = "vgg19"  # feature extractor name or {name: ..., params except taps}
    # tap -> weight; None stands for DEFAULT_LAYERS (a non-empty dict default would be merged
    # with, not replaced by, the user's mapping when the params are validated)
    layers: dict[str, float] | None = None
    criterion: str = "mse"  # mse | l1
    # multiplies every feature map: the paper's 1/12.75 (for its network, Caffe VGG19, the
    # default), "auto" (calibrated per tap on the first HR batch) or any positive number
    feature_scale: Any = PAPER_FEATURE_SCALE


class PerceptualLoss(nn.Module):
    """Distance between loss-network feature maps of SR and HR (the paper's VGG content loss).

    loss = sum over taps t of  weight_t * criterion(s_t * phi_t(SR), s_t * phi_t(HR)).

    Images arrive in the generator's output range (``set_image_range``), are mapped to [0, 1] and
    then to the network's own input convention by its ``input_spec``. The HR pass runs without a
    graph; the SR pass keeps one so the gradient reaches the generator. The network is frozen, so
    no gradient reaches its weights.

    ``s_t`` is the feature rescale: a fixed number for every tap (the paper's 1/12.75), or
    ``"auto"``: ``calibrate(hr)`` then sets, per tap, the scale at which the HR features' own
    size under the criterion is 1 on one batch of HR images: ``s_t = 1 / mean(|phi_t(HR)|)`` for
    l1 and ``1 / sqrt(mean(phi_t(HR)^2))`` for mse. The loss then measures the feature error
    relative to the feature size, which makes taps and backbones comparable: on Set5 crops vs
    their bicubic x4 down-up versions, the caffe VGG19 taps relu1_2..relu5_4 span 35.6 to 3.1e5
    raw (mse) but 0.16 to 0.52 calibrated (the mean |phi| a plain mean-abs rescale would use
    still leaves a 27x spread for mse: ReLU features are sparse). The scales are buffers, so
    checkpoints keep them; a loss that is already calibrated (e.g. restored from a checkpoint)
    keeps its scales unless ``force=True``.
    """

    def __init__(self, network: nn.Module, layers: dict[str, float], criterion: str,
                 feature_scale: float | str) -> None:
        super().__init__()
        self.network = network
        self.layers = dict(layers)
        self.criterion = criterion
        self.auto = feature_scale == "auto"
        initial = math.nan if self.auto else float(feature_scale)
        self.register_buffer("scales", torch.full((len(self.layers),), initial))
        self.image_range = (0.0, 1.0)

    def set_image_range(self, lo: float, hi: float) -> None:
        """Declare the range SR and HR images come in (the generator's ``output_range``)."""
        if not hi > lo:
            raise ValueError(f"image range must have hi > lo, got ({lo}, {hi})")
        self.image_range = (float(lo), float(hi))

    def _features(self, images: Tensor) -> dict[str, Tensor]:
        lo, hi = self.image_range
        x01 = (images - lo) / (hi - lo)
        return self.network(self.network.input_spec.convert(x01))

    @property
    def calibrated(self) -> bool:
        return bool(torch.isfinite(self.scales).all())

    @torch.no_grad()
    def calibrate(self, hr: Tensor, force: bool = False) -> dict[str, float]:
        """With ``feature_scale: auto``, set each tap's scale from ``hr`` (see the class
        docstring); otherwise a no-op. Returns the scales per tap."""
        if self.auto and (force or not self.calibrated):
            feats = self._features(hr)
            for i, tap in enumerate(self.layers):
                f = feats[tap]
                magnitude = (f.abs().mean() if self.criterion == "l1"
                             else f.square().mean().sqrt()).item()
                if not magnitude > 0:
                    raise UserError(f"perceptual loss: tap '{tap}' is all zero on the calibration "
                                    f"batch; use a fixed feature_scale or another layer")
                self.scales[i] = 1.0 / magnitude
        return dict(zip(self.layers, self.scales.tolist(), strict=True))

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        # checked once: reading the scales is a host sync that a CUDA step should not pay
        if not getattr(self, "_checked", False):
            if not self.calibrated:
                raise RuntimeError("perceptual loss with feature_scale 'auto' must be calibrated "
                                   "first: call loss.calibrate(hr_batch) before training")
            self._checked = True
        with torch.no_grad():
            target = self._features(hr)
        pred = self._features(sr)
        distance = CRITERIA[self.criterion]
        total = sr.new_zeros(())
        for i, (tap, weight) in enumerate(self.layers.items()):
            scale = self.scales[i]
            total = total + weight * distance(pred[tap] * scale, target[tap] * scale)
        return total

    def extra_repr(self) -> str:
        scale = "auto" if self.auto else f"{self.scales[0].item():.6g}"
        return f"layers={self.layers}, criterion={self.criterion}, feature_scale={scale}"


def _network_spec(network: Any, taps: list[str]) -> dict[str, Any]:
    if isinstance(network, str):
        return {"name": network, "taps": taps}
    if isinstance(network, dict) and "name" in network:
        if "taps" in network:
            raise UserError("loss perceptual.network: do not set 'taps' here; the taps are the "
                            "keys of perceptual.layers")
        return {**network, "taps": taps}
    raise UserError(f"loss perceptual.network: expected a feature extractor name or a mapping "
                    f"with 'name', got {network!r}")


def build_perceptual(p: PerceptualParams, registry: Registry | None = None) -> PerceptualLoss:
    """The loss with its network built by ``registry`` (the one building this loss)."""
    _check_choice("loss perceptual.criterion", p.criterion, CRITERIA)
    layers = DEFAULT_LAYERS if p.layers is None else p.layers
    if not layers:
        raise UserError("loss perceptual.layers: give at least one tap, e.g. {relu5_4: 1.0}")
    scale = p.feature_scale
    if isinstance(scale, str) and scale != "auto":
        try:
            scale = float(scale)
        except ValueError:
            raise UserError(f"loss perceptual.feature_scale: expected a number or 'auto', got "
                            f"'{scale}'") from None
    if not isinstance(scale, str) and not (isinstance(scale, int | float) and scale > 0):
        raise UserError(f"loss perceptual.feature_scale: expected a positive number or 'auto', "
                        f"got {scale!r}")
    spec = _network_spec(p.network, list(layers))
    where = "loss perceptual.network"
    network = (registry.build("feature_extractor", spec, where) if registry is not None
               else plfw.build("feature_extractor", spec, where))
    return PerceptualLoss(network, layers, p.criterion, scale)


@dataclass
class AdversarialParams:
    mode: str = "vanilla"


class AdversarialLoss(nn.Module):
    """GAN objectives on discriminator logits (the sigmoid, where one applies, is inside).

    - vanilla: the paper's non-saturating generator loss -log D(G(x)) = softplus(-fake);
      discriminator: BCE-with-logits, real -> 1 plus fake -> 0.
    - lsgan: squared distance of the logits to the targets (G: fake -> 1; D: real -> 1 plus
      fake -> 0).
    - hinge: D: relu(1 - real) + relu(1 + fake); G: -fake.
    - relativistic: relativistic average GAN (ESRGAN eqs. 1-2), D_Ra(a, b) = sigmoid(C(a) -
      mean C(b)); D: -log D_Ra(real, fake) - log(1 - D_Ra(fake, real)); G: the same with the
      targets swapped. Both terms are summed as in the paper's equations (ESRGAN's released code
      averages them, i.e. halves the value).

    Each term is a mean over the batch; the discriminator losses sum the real and fake terms.
    """

    adversarial = True

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        #: whether ``generator_loss`` needs the discriminator's logits on real images
        self.uses_real_in_generator = mode == "relativistic"

    def generator_loss(self, real_logits: Tensor | None, fake_logits: Tensor) -> Tensor:
        fake = fake_logits.reshape(-1)
        if self.mode == "vanilla":
            return F.softplus(-fake).mean()
        if self.mode == "lsgan":
            return ((fake - 1) ** 2).mean()
        if self.mode == "hinge":
            return -fake.mean()
        real = self._need_real(real_logits)
        return F.softplus(real - fake.mean()).mean() + F.softplus(-(fake - real.mean())).mean()

    def discriminator_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        real, fake = real_logits.reshape(-1), fake_logits.reshape(-1)
        if self.mode == "vanilla":
            return F.softplus(-real).mean() + F.softplus(fake).mean()
        if self.mode == "lsgan":
            return ((real - 1) ** 2).mean() + (fake**2).mean()
        if self.mode == "hinge":
            return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
        return F.softplus(-(real - fake.mean())).mean() + F.softplus(fake - real.mean()).mean()

    def _need_real(self, real_logits: Tensor | None) -> Tensor:
        if real_logits is None:
            raise ValueError(f"adversarial mode '{self.mode}' needs the real images' logits")
        return real_logits.reshape(-1)

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


ADVERSARIAL_MODES = ("vanilla", "lsgan", "hinge", "relativistic")


def build_adversarial(p: AdversarialParams) -> AdversarialLoss:
    _check_choice("loss adversarial.mode", p.mode, ADVERSARIAL_MODES)
    return AdversarialLoss(p.mode)


@dataclass
class TVParams:
    kind: str = "absolute"
    reduction: str = "mean"


class TotalVariation(nn.Module):
    """Total variation of the SR image (a smoothness prior; ``hr`` is ignored).

    tv = R(d_h) + R(d_v), where d_h, d_v are the differences between horizontal and vertical
    neighbours, taken absolute (``kind: absolute``) or squared (``kind: squared``), and R is
    ``reduction``: ``mean`` divides the sum of both by N*C*H*W (independent of batch and crop
    size), ``sum`` sums over the whole batch.

    The paper gives SRResNet-VGG22 a TV weight of 2e-8 on a summed TV without stating its exact
    form; ``reduction: sum`` with weight 2e-8 reproduces a batch-summed one. With ``mean`` the
    equivalent weight is 2e-8 * N*C*H*W, i.e. 8.8e-3 for the paper's 16 crops of 3x96x96.
    """

    def __init__(self, kind: str, reduction: str) -> None:
        super().__init__()
        self.kind, self.reduction = kind, reduction

    def forward(self, sr: Tensor, hr: Tensor | None = None) -> Tensor:
        dh = sr[..., :, 1:] - sr[..., :, :-1]
        dv = sr[..., 1:, :] - sr[..., :-1, :]
        if self.kind == "squared":
            total = dh.square().sum() + dv.square().sum()
        else:
            total = dh.abs().sum() + dv.abs().sum()
        return total / sr.numel() if self.reduction == "mean" else total

    def extra_repr(self) -> str:
        return f"kind={self.kind}, reduction={self.reduction}"


def build_tv(p: TVParams) -> TotalVariation:
    _check_choice("loss tv.kind", p.kind, ("absolute", "squared"))
    _check_choice("loss tv.reduction", p.reduction, ("mean", "sum"))
    return TotalVariation(p.kind, p.reduction)


def paper_content(tap: str) -> Any:
    """The paper's content loss at one tap of Caffe VGG19, rescaled by 1/12.75, as a factory."""
    def build(_: None, registry: Registry | None = None) -> PerceptualLoss:
        return build_perceptual(PerceptualParams(network={"name": "vgg19", "weights": "caffe"},
                                                 layers={tap: 1.0}), registry)

    return build


@plfw.hookimpl
def plfw_register_losses(register: Any) -> None:
    register("mse", lambda _: PixelLoss("mse"), None, "mean squared pixel error")
    register("l1", lambda _: PixelLoss("l1"), None, "mean absolute pixel error")
    register("perceptual", build_perceptual, PerceptualParams,
             "feature-space distance through a frozen loss network (VGG54, VGG22, ...)")
    register("adversarial", build_adversarial, AdversarialParams,
             "GAN loss: vanilla (paper), lsgan, hinge or relativistic average")
    register("tv", build_tv, TVParams, "total variation of the SR image")
    register("vgg54", paper_content("relu5_4"), None,
             "the paper's VGG54 content loss: perceptual, Caffe VGG19 relu5_4 / 12.75")
    register("vgg22", paper_content("relu2_2"), None,
             "the paper's VGG22 content loss: perceptual, Caffe VGG19 relu2_2 / 12.75")

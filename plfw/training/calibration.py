"""Gradient matching: scale a content loss so the generator feels it as strongly as a reference.

Comparing loss networks is only fair when their losses pull on the generator equally hard.
``feature_scale: auto`` equalises the *size of the features*, which says little about how strongly
the loss moves the SR image. Gradient matching measures that directly: on one calibration batch,
the stand-in SR image is the MATLAB-bicubic x``scale`` upscale of the bicubic-downscaled HR (the
blur every SR generator starts from), and the loss is multiplied by

    factor = || d ref(SR0, HR) / d SR0 ||_2  /  || d loss(SR0, HR) / d SR0 ||_2

so both gradients have the same norm on that batch. The reference defaults to the paper's VGG54
(Caffe VGG19 relu5_4, feature maps / 12.75, MSE). The factor is a buffer: checkpoints keep it,
and a resumed run does not recalibrate.

In a config: ``losses: {content: {name: perceptual, ..., match_gradient: vgg54}}`` (a preset
name, or any loss spec as the reference).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from plfw.core.config import MATCH_GRADIENT_DEFAULT
from plfw.core.errors import UserError
from plfw.core.registry import Registry
from plfw.imaging.imresize import imresize


def reference_spec(value: Any, where: str, registry: Registry) -> dict[str, Any]:
    """The reference loss a ``match_gradient`` value names: a registered loss (e.g. ``vgg54``,
    the paper's content loss, which the built-in losses register) or a loss spec mapping;
    ``true`` stands for ``vgg54``, as in plfw 0.2. Checked against ``registry`` here, so a typo
    stops the run before its first step."""
    if value is True:
        value = MATCH_GRADIENT_DEFAULT
    if isinstance(value, str):
        value = {"name": value}
    if not (isinstance(value, dict) and isinstance(value.get("name"), str)):
        raise UserError(f"{where}.match_gradient: expected a loss name (e.g. vgg54, vgg22, mse) "
                        f"or a loss spec like {{name: perceptual, ...}}, got {value!r}")
    registry.get("loss", value["name"])  # an unknown name: one line with the closest names
    return dict(value)


def calibration_sr(hr: Tensor, scale: int) -> Tensor:
    """The stand-in SR batch: MATLAB bicubic down by ``scale`` and back up (same range as hr)."""
    h, w = hr.shape[-2:]
    hr = hr[..., : h - h % scale, : w - w % scale]
    lr = imresize(hr.float(), scale=1 / scale)
    return imresize(lr, scale=scale).to(hr.dtype)


def gradient_norm(loss: nn.Module, sr: Tensor, hr: Tensor) -> float:
    """|| d loss(sr, hr) / d sr ||_2 (fp32, no autocast)."""
    x = sr.detach().float().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(x, hr.float()), x)
    return float(grad.norm())


class GradientMatched(nn.Module):
    """``factor * loss(sr, hr)`` with ``factor`` set by :meth:`calibrate` (module docstring)."""

    def __init__(self, loss: nn.Module, reference: dict[str, Any], scale: int, where: str,
                 registry: Registry) -> None:
        super().__init__()
        self.loss = loss
        self.registry = registry  # builds the reference loss
        self.reference = dict(reference)
        self.scale, self.where = scale, where
        self.image_range = (0.0, 1.0)
        self.register_buffer("factor", torch.tensor(math.nan))

    def set_image_range(self, lo: float, hi: float) -> None:
        self.image_range = (float(lo), float(hi))
        if hasattr(self.loss, "set_image_range"):
            self.loss.set_image_range(lo, hi)

    @property
    def calibrated(self) -> bool:
        return bool(torch.isfinite(self.factor))

    def _build_reference(self, device: torch.device) -> nn.Module:
        # A reference with random weights must not draw from (and so shift) the training RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            ref = self.registry.build("loss", self.reference, f"{self.where}.match_gradient")
            ref = ref.to(device)
        if getattr(ref, "adversarial", False):
            raise UserError(f"{self.where}.match_gradient: the reference must be a content "
                            "loss, not an adversarial one")
        if hasattr(ref, "set_image_range"):
            ref.set_image_range(*self.image_range)
        return ref

    def calibrate(self, hr: Tensor, force: bool = False,
                  sr: Tensor | None = None) -> dict[str, float]:
        """Calibrate the wrapped loss (if it asks for it), then set ``factor`` on ``hr``, with
        ``sr`` (e.g. the starting generator's output) in place of the bicubic stand-in."""
        inner = self.loss.calibrate(hr, force=force) if hasattr(self.loss, "calibrate") else {}
        if self.calibrated and not force:
            return {**inner, "factor": float(self.factor)}
        sr0 = calibration_sr(hr, self.scale) if sr is None else sr.to(hr.dtype)
        hr = hr[..., : sr0.shape[-2], : sr0.shape[-1]]
        ref = self._build_reference(hr.device)
        if hasattr(ref, "calibrate"):
            ref.calibrate(hr)
        with torch.enable_grad():
            target = gradient_norm(ref, sr0, hr)
            mine = gradient_norm(self.loss, sr0, hr)
        if not (mine > 0 and math.isfinite(mine) and target > 0 and math.isfinite(target)):
            raise UserError(f"{self.where}.match_gradient: gradient norms on the calibration "
                            f"batch are {mine:g} (this loss) and {target:g} (reference); "
                            "gradient matching needs both finite and non-zero")
        self.factor.fill_(target / mine)
        return {**inner, "factor": target / mine, "grad_norm": mine, "reference_grad_norm": target}

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        if not getattr(self, "_checked", False):  # one host sync, on the first call only
            if not self.calibrated:
                raise RuntimeError(f"{self.where}: match_gradient needs calibrate(hr) before "
                                   "training")
            self._checked = True
        return self.factor * self.loss(sr, hr)

    def extra_repr(self) -> str:
        return f"reference={self.reference.get('name')}, factor={float(self.factor):.6g}"

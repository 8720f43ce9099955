"""Judges outside the ImageNet family: handcrafted full-reference measures from ``piq`` and a
no-reference naturalness measure (NIQE).

LPIPS-style metrics are ImageNet networks and can favour SR models trained with losses of the same
family (PIPAL, Gu et al., ECCV 2020), so an ablation of loss networks also needs judges that share
nothing with them. Registered here (all with ``networks = ()``):

- ``haarpsi`` (Reisenhofer et al., Signal Processing: Image Communication 2018): similarity of Haar
  wavelet responses, weighted by low-frequency energy; 0..1, **higher is better**.
- ``gmsd`` (Xue et al., IEEE TIP 2014): standard deviation of the gradient-magnitude similarity
  map; **lower is better** (0 for identical images).
- ``ms_gmsd`` (Zhang et al., ICASSP 2017): GMSD over four scales, luma only; lower is better.
- ``niqe`` (Mittal et al., IEEE SPL 2013): distance of the image's patch statistics from a pristine
  model fitted on T91 + BSD200 (see :mod:`plfw_builtins.metrics.niqe`); lower is better; ``hr``
  is ignored.

The piq measures are piq 0.8.0's own functions, called on one image pair; plfw only prepares the
input the way its other metrics do: both images quantised to 8 bits (``floor(x * 255 + 0.5)``),
``border`` pixels cut from each side, float64. A grey image stays one channel (piq scores its
luma, as the reference code does for grey input). Not registered: ``vsi`` (piq copies a grey
image to RGB with a warning) and ``fsim`` (a grey image needs ``chromatic=False``, i.e. FSIM
instead of FSIMc, so one set would mix two measures).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

import plfw
from plfw import UserError
from plfw_builtins.metrics import niqe as niqe_mod

PIQ_INSTALL = "pip install piq==0.8.0"


def quantise(x01: torch.Tensor) -> torch.Tensor:
    """8-bit quantisation as the other metrics do it (round half up, saturate), in float64."""
    return torch.floor(x01.detach().to(torch.float64).clamp(0, 1) * 255 + 0.5) / 255


def crop(x: torch.Tensor, border: int) -> torch.Tensor:
    return x[..., border:-border, border:-border] if border else x


@dataclass
class IQAParams:
    border: int = 4


@dataclass
class NIQEParams:
    border: int = 4
    model: str | None = None  # another pristine model (.npz from scripts/fit_niqe.py)


@dataclass(frozen=True)
class PiqSpec:
    """How one piq function is called: its name in piq, the keyword arguments, whether higher
    is better and the smallest side it accepts."""

    function: str
    higher_is_better: bool
    min_side: int
    kwargs: tuple[tuple[str, Any], ...] = ()
    description: str = ""


PIQ_METRICS = {
    "haarpsi": PiqSpec("haarpsi", True, 16, (),
                       "HaarPSI (Reisenhofer et al. 2018, piq): Haar-wavelet similarity, "
                       "higher is better"),
    "gmsd": PiqSpec("gmsd", False, 2, (),
                    "GMSD (Xue et al. 2014, piq): gradient-magnitude similarity deviation, "
                    "lower is better"),
    "ms_gmsd": PiqSpec("multi_scale_gmsd", False, 17, (("chromatic", False),),
                       "MS-GMSD (Zhang et al. 2017, piq): GMSD on four scales, lower is better"),
}


def _piq() -> Any:
    try:
        import piq
    except ImportError:
        return None
    return piq


class PiqMetric:
    """A piq full-reference measure as a plfw metric: ``(sr, hr) -> float`` on CHW [0, 1]."""

    networks: tuple[str, ...] = ()  # no learned weights at all

    def __init__(self, name: str, spec: PiqSpec, fn: Callable[..., torch.Tensor],
                 border: int) -> None:
        self.name, self.spec, self._fn, self.border = name, spec, fn, border
        self.higher_is_better = spec.higher_is_better

    def prepare(self, sr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The NCHW float64 pair piq receives: quantised, border cut."""
        if sr.dim() != 3 or sr.shape != hr.shape or sr.shape[0] not in (1, 3):
            raise ValueError(f"{self.name}: expected two CHW images of the same shape with 1 or 3 "
                             f"channels, got {tuple(sr.shape)} and {tuple(hr.shape)}")
        h, w = (s - 2 * self.border for s in sr.shape[-2:])
        if min(h, w) < self.spec.min_side:
            raise UserError(f"{self.name}: image {tuple(sr.shape[-2:])} is too small: after a "
                            f"{self.border}-pixel border it needs at least {self.spec.min_side} "
                            f"pixels a side")
        return (crop(quantise(sr), self.border)[None], crop(quantise(hr), self.border)[None])

    def __call__(self, sr: torch.Tensor, hr: torch.Tensor) -> float:
        a, b = self.prepare(sr, hr)
        return float(self._fn(a, b, data_range=1.0, reduction="mean", **dict(self.spec.kwargs)))

    def __repr__(self) -> str:
        return f"{self.name}(border={self.border})"


def _piq_factory(name: str) -> Callable[[IQAParams], PiqMetric]:
    spec = PIQ_METRICS[name]

    def build(params: IQAParams) -> PiqMetric:
        if params.border < 0:
            raise UserError(f"metric '{name}': border must be >= 0, got {params.border}")
        piq = _piq()
        if piq is None:
            raise UserError(f"metric '{name}' needs the piq package: {PIQ_INSTALL}")
        return PiqMetric(name, spec, getattr(piq, spec.function), params.border)

    return build


class NIQEMetric:
    """NIQE of ``sr`` (``hr`` is not used): lower is more natural."""

    name = "niqe"
    higher_is_better = False
    networks: tuple[str, ...] = ()

    def __init__(self, model: niqe_mod.PristineModel, border: int) -> None:
        self.model, self.border = model, border

    def __call__(self, sr: torch.Tensor, hr: torch.Tensor | None = None) -> float:
        if sr.dim() != 3 or sr.shape[0] not in (1, 3):
            raise ValueError(f"niqe: expected a CHW image with 1 or 3 channels, got "
                             f"{tuple(sr.shape)}")
        y = crop(niqe_mod.luma255(sr), self.border)
        if min(y.shape) < niqe_mod.PATCH:
            raise UserError(f"niqe: image {tuple(sr.shape[-2:])} is too small: after a "
                            f"{self.border}-pixel border it needs at least {niqe_mod.PATCH} "
                            f"pixels a side")
        return niqe_mod.score(y, self.model)

    def __repr__(self) -> str:
        return f"niqe(border={self.border})"


def build_niqe(params: NIQEParams) -> NIQEMetric:
    if params.border < 0:
        raise UserError(f"metric 'niqe': border must be >= 0, got {params.border}")
    return NIQEMetric(niqe_mod.load_model(params.model), params.border)


@plfw.hookimpl
def plfw_register_metrics(register: Any) -> None:
    for name, spec in PIQ_METRICS.items():
        register(name, _piq_factory(name), IQAParams,
                 f"{spec.description}; 8-bit quantised, border cropped, no network")
    register("niqe", build_niqe, NIQEParams,
             "NIQE (Mittal et al. 2013), no reference, lower is better; pristine model fitted on "
             "T91 + BSD200, so not comparable to published NIQE values")

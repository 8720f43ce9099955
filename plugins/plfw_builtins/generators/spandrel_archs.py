"""Generators from spandrel's architecture classes, trainable by name: ``spandrel:SPAN``,
``spandrel:Compact``, ``spandrel:SwinIR``, ... (any architecture of ``spandrel``'s main
registry; needs ``pip install 'plfw[spandrel]'``).

``arch`` is the architecture's id in spandrel (``spandrel:<id>`` fills it). ``options`` are passed
to its class as keyword arguments (its own parameter names, e.g. ``{feature_channels: 48}`` for
SPAN, ``{num_feat: 64, num_conv: 16}`` for Compact); plfw fills in the upscaling factor under
whichever name the class uses (``upscale``, ``upscale_factor``, ``scale``, ...) and 3 input and
output channels where the class asks for them. Images go in and come out in [0, 1]. Exported
models (``plfw export``, ``models/<phase>.pt``) store this spec and reload through it; spandrel
itself opens the plain state dicts other tools write (``plfw upscale weights.pth``).

Licences: spandrel's own code is MIT, and its main package holds the architectures with
permissive licences (the restrictive ones live in ``spandrel_extra_arches``, which plfw never
imports); each architecture's licence is in ``spandrel/architectures/<id>/__arch/LICENSE`` of the
spandrel repository. Weights you train are yours; weights you load carry their own licence.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import plfw
from plfw import UserError, suggest

INSTALL = "pip install 'plfw[spandrel]'"
#: names architectures give their upscaling factor, and their input / output channel counts
SCALE_NAMES = ("upscale", "upscale_factor", "scale", "up_scale", "upscaling_factor")
IN_NAMES = ("num_in_ch", "in_nc", "in_chans", "in_channels", "in_ch", "inp_channels")
OUT_NAMES = ("num_out_ch", "out_nc", "out_chans", "out_channels", "out_ch")


@dataclass
class SpandrelParams:
    """An architecture of spandrel's main registry, built untrained: ``spandrel:<id>``."""

    arch: str = ""  # spandrel's architecture id, e.g. SPAN, Compact, SwinIR
    scale: int = 4
    options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of its class


def architectures() -> list[str]:
    """The ids of spandrel's main registry (empty without spandrel)."""
    try:
        from spandrel import MAIN_REGISTRY
    except ImportError:
        return []
    return sorted(a.architecture.id for a in MAIN_REGISTRY.architectures())


def model_class(arch: str) -> type[nn.Module]:
    """The network class of architecture ``arch``, or a one-line error."""
    known = architectures()
    if not known:
        raise UserError(f"generator 'spandrel:{arch}' needs the spandrel package: {INSTALL}")
    if arch not in known:
        raise UserError(f"generator spandrel: unknown architecture '{arch}'{suggest(arch, known)}")
    cls = getattr(importlib.import_module(f"spandrel.architectures.{arch}"), arch, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise UserError(f"generator 'spandrel:{arch}': spandrel has no single network class "
                        f"for it; choose another architecture")
    return cls


class SpandrelNet(nn.Module):
    """A spandrel architecture as a plfw generator: [0, 1] RGB in and out, ``scale``."""

    output_range = (0.0, 1.0)

    def __init__(self, net: nn.Module, arch: str, scale: int) -> None:
        super().__init__()
        self.net, self.architecture, self.scale = net, arch, scale

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.net(lr)


def build_spandrel(p: SpandrelParams) -> SpandrelNet:
    cls = model_class(p.arch)
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = dict(p.options)
    unknown = [k for k in kwargs if k not in accepted]
    if unknown and not any(v.kind is inspect.Parameter.VAR_KEYWORD for v in accepted.values()):
        raise UserError(f"generator 'spandrel:{p.arch}': unknown option '{unknown[0]}'"
                        f"{suggest(unknown[0], [k for k in accepted if k != 'self'])}")
    for names, value in ((SCALE_NAMES, p.scale), (IN_NAMES, 3), (OUT_NAMES, 3)):
        name = next((n for n in names if n in accepted), None)
        if name is not None and name not in kwargs:
            kwargs[name] = value
    try:
        net = cls(**kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        raise UserError(f"generator 'spandrel:{p.arch}': {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:160] if str(exc) else 'bad options'}"
                        ) from None
    return SpandrelNet(net, p.arch, p.scale)


@plfw.hookimpl
def plfw_register_generators(register: plfw.Register) -> None:
    register("spandrel", build_spandrel, SpandrelParams,
             "an architecture of spandrel by name: spandrel:SPAN, spandrel:Compact, ...",
             prefix_param="arch")


__all__ = ["SpandrelNet", "architectures", "build_spandrel", "model_class"]

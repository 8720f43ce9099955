"""What the core knows about loss networks: their input conventions and how to freeze them.

Input-range confusion is the classic perceptual-loss bug, so every feature extractor declares
an :class:`InputSpec` and the core converts images from [0, 1] RGB into it in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class InputSpec:
    """x_net = ((x01 * scale)[channel order] - mean) / std, for RGB x01 in [0, 1]."""

    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    scale: float = 1.0
    bgr: bool = False
    name: str = "custom"

    def convert(self, x01: torch.Tensor) -> torch.Tensor:
        """Map an RGB batch in [0, 1] (N, 3, H, W) to this network's input."""
        if self.bgr:
            x01 = x01.flip(1)
        shape = (1, 3, 1, 1)
        mean = torch.tensor(self.mean, dtype=x01.dtype, device=x01.device).view(shape)
        std = torch.tensor(self.std, dtype=x01.dtype, device=x01.device).view(shape)
        return (x01 * self.scale - mean) / std


IMAGENET = InputSpec((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), name="imagenet")
CAFFE = InputSpec((103.939, 116.779, 123.68), (1.0, 1.0, 1.0), 255.0, bgr=True, name="caffe")
UNIT = InputSpec(name="unit")
SIGNED = InputSpec((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), name="minus_one_one")


_FROZEN_CLASSES: dict[type, type] = {}


def _frozen_class(cls: type) -> type:
    """A subclass of ``cls`` whose ``train()`` always switches to eval mode."""
    if cls not in _FROZEN_CLASSES:
        def train(self: nn.Module, mode: bool = True) -> nn.Module:
            return cls.train(self, False)

        # Published in this module under a unique name so that pickle can find it again.
        name = f"Frozen_{cls.__module__.replace('.', '_')}_{cls.__qualname__.replace('.', '_')}"
        frozen = type(name, (cls,), {"train": train, "__module__": __name__})
        globals()[name] = _FROZEN_CLASSES[cls] = frozen
    return _FROZEN_CLASSES[cls]


def freeze(module: nn.Module) -> nn.Module:
    """Freeze a loss network for good: no gradients to its weights, and an eval mode that a
    parent's ``.train()`` cannot undo (batch-norm statistics and dropout stay fixed)."""
    for p in module.parameters():
        p.requires_grad_(False)
    if not is_frozen(module):
        module.__class__ = _frozen_class(type(module))
    module.eval()
    return module


def is_frozen(module: nn.Module) -> bool:
    return type(module) in _FROZEN_CLASSES.values()

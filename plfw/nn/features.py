"""What the core knows about loss networks: their input conventions, how to freeze them, and
the base class they share.

Input-range confusion is the classic perceptual-loss bug, so every feature extractor declares
an :class:`InputSpec` and the core converts images from [0, 1] RGB into it in one place.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from plfw.core.errors import UserError, suggest


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


class TapExtractor(nn.Module):
    """Base of loss networks: a network that returns named intermediate feature maps, *taps*.

    It holds the contract's attributes, ``taps`` (the names, in the order the maps come out) and
    ``input_spec``, checks the requested taps against the ones the network has (an unknown name
    is a one-line error with the closest names) and gives ``forward(x) -> {tap: map}`` from
    ``iter_taps``. A network that is a plain stack of layers passes the stack and the index of
    the layer each tap is read after to :meth:`iter_stack`, which stops after the deepest tap;
    one read through forward hooks overrides :meth:`iter_taps`. Call :func:`freeze` on the
    finished module (as every factory of a loss network must)."""

    def __init__(self, taps: Sequence[str], known: Sequence[str], input_spec: InputSpec,
                 where: str, network_order: bool = False) -> None:
        super().__init__()
        taps = [str(t) for t in taps]
        if not taps:
            raise UserError(f"{where}: taps is empty; name at least one of "
                            f"{', '.join(map(str, known[:8]))}")
        for tap in taps:
            if tap not in known:
                raise UserError(f"{where}: unknown tap '{tap}'{suggest(tap, list(known))}")
        wanted = set(taps)
        self.taps: tuple[str, ...] = (tuple(t for t in known if t in wanted) if network_order
                                      else tuple(dict.fromkeys(taps)))
        self.input_spec = input_spec

    def iter_taps(self, x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        """(tap, feature map) for every tap, as soon as each is computed (a metric can drop a
        map once it has used it)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(self.iter_taps(x))

    @staticmethod
    def iter_stack(layers: nn.Sequential, tap_at: Mapping[int, str],
                   x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        """Run ``layers`` in order, yielding ``(tap_at[i], output of layer i)``; layers after
        the deepest tap are not run."""
        last = max(tap_at)
        for i, layer in enumerate(layers):
            if i > last:
                break
            x = layer(x)
            if i in tap_at:
                yield tap_at[i], x

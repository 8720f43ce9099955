"""Geometric self-ensemble: a generator's mean output over the 8 flips and 90-degree rotations.

A network trained on flipped and rotated crops is close to, but not exactly, equivariant to
those transforms; its errors on the 8 transformed copies of an image are partly independent, so
the mean of the 8 outputs, each mapped back, is closer to HR (EDSR's "+" models, Lim et al.
2017, report about +0.1 dB on Set5 x4). It costs 8 passes. The mean is exactly equivariant
itself (``tests/test_ensemble.py``), and an equivariant method (bicubic) is left unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

#: (quarter turns, mirror first) for the 8 symmetries of the square; the identity first
DIHEDRAL: tuple[tuple[int, bool], ...] = tuple((k, m) for m in (False, True) for k in range(4))


def transform(x: Tensor, index: int) -> Tensor:
    """The ``index``-th symmetry of ``DIHEDRAL`` applied to the last two dimensions."""
    turns, mirror = DIHEDRAL[index]
    return torch.rot90(x.flip(-1) if mirror else x, turns, (-2, -1))


def untransform(x: Tensor, index: int) -> Tensor:
    """The inverse of :func:`transform`."""
    turns, mirror = DIHEDRAL[index]
    x = torch.rot90(x, -turns, (-2, -1))
    return x.flip(-1) if mirror else x


def dihedral_mean(fn: Callable[[Tensor, int], Tensor], x: Tensor, passes: int = 8) -> Tensor:
    """Mean over the first ``passes`` symmetries of ``untransform(fn(transform(x, i), i), i)``
    in fp32 (``passes`` = 1: ``fn(x, 0)`` alone). ``fn`` gets the pass index, e.g. for progress."""
    if not 1 <= passes <= len(DIHEDRAL):
        raise ValueError(f"passes must be 1..{len(DIHEDRAL)}, got {passes}")
    if passes == 1:
        return fn(x, 0)

    def one(i: int) -> Tensor:
        return untransform(fn(transform(x, i).contiguous(), i), i).float()

    # untransform returns a new tensor (rot90 copies even for no turn), so the first pass's
    # output can hold the running sum; each later output is freed right after its add.
    total = one(0)
    for i in range(1, passes):
        total.add_(one(i))
    return total.div_(passes)


def self_ensemble(method: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``method`` (image -> upscaled image, CHW or NCHW) averaged over the 8 symmetries."""
    return lambda x: dihedral_mean(lambda t, _i: method(t), x)

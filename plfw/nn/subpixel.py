"""A convolution after ``PixelShuffle(r)``, computed before it: the same function, faster.

SRResNet ends in a 9x9 convolution at full output resolution with 3 output channels, a shape
CPU convolution kernels run at a fifth of their usual rate (forward and backward). That
convolution applied to ``PixelShuffle(r)(x)`` equals a convolution applied to ``x`` itself, on
the r^2-times-smaller grid, with r^2 times the channels in and out, followed by the shuffle:
output pixel (r*y + a, r*x + b) reads input offsets d in [-p, p] around it, which on the small
grid are offsets floor((a + d) / r) of sub-position (a + d) mod r. The moved kernel is
2*ceil(p/r) + 1 wide; zero padding of the small grid is zero padding of the large one, so the
borders are exact too. :func:`subpixel_weight` builds the moved kernel from the original one
by a gather, so gradients reach the original parameters and checkpoints keep their layout.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F


@cache
def _index(out_ch: int, in_ch: int, k: int, r: int) -> np.ndarray:
    """For each entry of the moved (out_ch*r*r, in_ch*r*r, m, m) kernel, the flat position of
    the original (out_ch, in_ch, k, k) weight it copies, or out_ch*in_ch*k*k (a zero). Cached
    as an array (only ever read), not a tensor: a tensor made on first use could be an
    inference-mode or a tracing (fake) tensor, unusable later."""
    p = k // 2
    q = math.ceil(p / r)
    m = 2 * q + 1
    index = np.full((out_ch, r, r, in_ch, r, r, m, m), out_ch * in_ch * k * k, dtype=np.int64)
    o = np.arange(out_ch).reshape(-1, 1) * (in_ch * k * k)
    c = np.arange(in_ch).reshape(1, -1) * (k * k)
    for a in range(r):
        for b in range(r):
            for dy in range(-p, p + 1):
                qy, i = divmod(a + dy, r)
                for dx in range(-p, p + 1):
                    qx, j = divmod(b + dx, r)
                    index[:, a, b, :, i, j, qy + q, qx + q] = o + c + (dy + p) * k + (dx + p)
    return index.reshape(out_ch * r * r, in_ch * r * r, m, m)


def subpixel_weight(weight: torch.Tensor, factor: int) -> torch.Tensor:
    """The kernel that, applied *before* ``PixelShuffle(factor)`` with padding
    ``subpixel_padding(k, factor)``, gives what ``weight`` (a stride-1 "same"-padded odd square
    kernel) gives after it: ``shuffle(conv(x, subpixel_weight(w, r))) == conv(shuffle(x), w)``.
    Differentiable in ``weight``. Its bias is the original bias repeated ``factor**2`` times
    (``bias.repeat_interleave(factor**2)``)."""
    out_ch, in_ch, k, k2 = weight.shape
    if k != k2 or k % 2 == 0:
        raise ValueError(f"subpixel_weight needs an odd square kernel, got {k}x{k2}")
    index = torch.from_numpy(_index(out_ch, in_ch, k, factor)).to(weight.device)
    flat = torch.cat([weight.reshape(-1), weight.new_zeros(1)])
    return flat.take(index)


def subpixel_padding(kernel: int, factor: int) -> int:
    """Padding of the moved kernel (its half-width) for an original ``kernel`` x ``kernel``."""
    return math.ceil((kernel // 2) / factor)


def conv_after_shuffle(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                       factor: int) -> torch.Tensor:
    """``conv2d(pixel_shuffle(x, factor), weight, bias, padding=k // 2)``, computed on the small
    grid (see the module docstring)."""
    k = weight.shape[-1]
    moved_bias = None if bias is None else bias.repeat_interleave(factor * factor)
    y = F.conv2d(x, subpixel_weight(weight, factor), moved_bias,
                 padding=subpixel_padding(k, factor))
    return F.pixel_shuffle(y, factor)

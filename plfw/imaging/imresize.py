"""MATLAB-compatible bicubic ``imresize`` in torch.

SR benchmarks define "bicubic" by MATLAB's ``imresize``: a cubic kernel with a = -0.5, widened by
1/scale when shrinking (antialiasing), symmetric (mirror) borders, one pass per dimension. PIL and
OpenCV differ from it, which shifts benchmark PSNR, so plfw makes LR images and bicubic baselines
with this module. Each pass is a dense (out, in) weight matrix applied as a matmul; the matrices
are cached per (in_len, out_len, scale).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

_A = -0.5  # cubic convolution parameter used by MATLAB (Keys 1981)


def _cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (support [-2, 2])."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (_A + 2) * ax3 - (_A + 3) * ax2 + 1
    far = _A * ax3 - 5 * _A * ax2 + 8 * _A * ax - 4 * _A
    return torch.where(ax <= 1, near, torch.where(ax < 2, far, torch.zeros_like(ax)))


@lru_cache(maxsize=64)
def _weights64(in_len: int, out_len: int, scale: float) -> torch.Tensor:
    """The (out_len, in_len) float64 matrix of one MATLAB resize pass along one dimension."""
    width = 4.0 / scale if scale < 1 else 4.0
    out_pos = torch.arange(1, out_len + 1, dtype=torch.float64)
    # Output pixel centres mapped into input coordinates (1-based, as in MATLAB).
    u = out_pos / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    dist = u[:, None] - idx
    w = scale * _cubic(scale * dist) if scale < 1 else _cubic(dist)
    w = w / w.sum(dim=1, keepdim=True)
    # Symmetric padding: index sequence 1..n, n..1 repeated.
    zero_based = (idx - 1).long() % (2 * in_len)
    src = torch.where(zero_based < in_len, zero_based, 2 * in_len - 1 - zero_based)
    mat = torch.zeros(out_len, in_len, dtype=torch.float64)
    mat.scatter_add_(1, src, w)
    return mat


@lru_cache(maxsize=64)
def _weights(in_len: int, out_len: int, scale: float, dtype: torch.dtype,
             device: torch.device) -> torch.Tensor:
    return _weights64(in_len, out_len, scale).to(device=device, dtype=dtype)


def _plan(h: int, w: int, scale: float | None,
          size: tuple[int, int] | None) -> list[tuple[int, int, int, float]]:
    """Passes as (dim, in_len, out_len, scale), in MATLAB's order: smallest scale first, height
    first on a tie (so a uniform scale always does height, then width)."""
    if (scale is None) == (size is None):
        raise ValueError("imresize: give exactly one of scale and size")
    if scale is not None:
        if scale <= 0:
            raise ValueError(f"imresize: scale must be positive, got {scale}")
        passes = [(-2, h, math.ceil(h * scale), float(scale)),
                  (-1, w, math.ceil(w * scale), float(scale))]
    else:
        oh, ow = (int(s) for s in size)
        if oh <= 0 or ow <= 0:
            raise ValueError(f"imresize: size must be positive, got {size}")
        passes = [(-2, h, oh, oh / h), (-1, w, ow, ow / w)]
    return sorted(passes, key=lambda p: p[3])


def _apply(x: torch.Tensor, dim: int, mat: torch.Tensor) -> torch.Tensor:
    return mat @ x if dim == -2 else x @ mat.T


def imresize(x: torch.Tensor, scale: float | None = None,
             size: tuple[int, int] | None = None) -> torch.Tensor:
    """MATLAB ``imresize(x, scale, 'bicubic')`` (or ``imresize(x, [h w], 'bicubic')``) on a float
    CHW or NCHW tensor of any range. Output size is ceil(scale * input) per side; nothing is
    rounded or clamped (bicubic overshoots, as in MATLAB on floating-point images)."""
    if not x.is_floating_point():
        raise TypeError(f"imresize expects a floating-point tensor, got {x.dtype}")
    if x.dim() not in (3, 4):
        raise ValueError(f"imresize expects CHW or NCHW, got shape {tuple(x.shape)}")
    for dim, in_len, out_len, s in _plan(x.shape[-2], x.shape[-1], scale, size):
        x = _apply(x, dim, _weights(in_len, out_len, s, x.dtype, x.device))
    return x


def _to_uint8_matlab(x: torch.Tensor) -> torch.Tensor:
    """MATLAB's cast to uint8: round half away from zero, then saturate to [0, 255]."""
    return torch.floor(x + 0.5).clamp_(0, 255)


def bicubic_downscale_uint8(img: torch.Tensor, scale: int) -> torch.Tensor:
    """LR image exactly as MATLAB ``imresize(uint8_img, 1/scale, 'bicubic')`` makes it.

    ``img`` is CHW or NCHW holding integer values 0..255 (uint8, or a float tensor of whole
    numbers, within 1e-3, such as ``hr01 * 255``; a [0, 1] image is rejected). MATLAB keeps
    uint8 between its two passes, so the result is rounded after each pass; the arithmetic is
    float64. Returns a uint8 tensor (like the LR files on disk); divide by 255 for [0, 1].
    """
    if img.dim() not in (3, 4):
        raise ValueError(f"expected CHW or NCHW, got shape {tuple(img.shape)}")
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    if img.is_floating_point():
        x = img.to(torch.float64).round()
        if img.numel() and (x.min() < 0 or x.max() > 255 or (img - x).abs().max() > 1e-3):
            raise ValueError("bicubic_downscale_uint8 expects values 0..255 (uint8 or whole-number "
                             "floats), not a [0, 1] image; multiply by 255 first")
    elif img.dtype == torch.uint8:
        x = img.to(torch.float64)
    else:
        raise TypeError(f"bicubic_downscale_uint8 expects uint8 or float, got {img.dtype}")
    for dim, in_len, out_len, s in _plan(x.shape[-2], x.shape[-1], 1 / scale, None):
        x = _to_uint8_matlab(_apply(x, dim, _weights(in_len, out_len, s, x.dtype, x.device)))
    return x.to(torch.uint8)

"""Find evaluation images that show the same picture (Set5 ``head`` is Set14 ``face``).

A benchmark that counts the same photo twice weighs it twice, and an interval that treats the
images as independent draws (:mod:`plfw.studies.intervals`) is then too narrow. Duplicates in SR
test sets are rarely byte-identical: one copy is usually cut from the other with a few pixels
less border, or shifted by a few pixels, or stored as gray instead of RGB. So two images count
as duplicates when, at the best integer offset of one over the other, their luma differs by less
than ``max_difference`` (mean absolute difference, default 2/255) over an overlap that covers at
least ``min_overlap`` (default 75 %) of each side of both images -- which admits a crop of up to
about 10 % per side, or a shift of a few percent, and nothing smaller.

How, fast enough for hundreds of images: every image becomes a luma pyramid of 2x2 block means.
For each pair of compatible sizes, one FFT cross-correlation at a coarse level (about 32-64
pixels, lightly blurred so that an offset that is not a multiple of the block size still
matches) gives the mean squared difference at every offset at once. Only pairs whose best coarse
offset already matches well go on: the offset is refined level by level (doubling it and trying
+-2 pixels each time) up to full resolution, where the mean absolute difference decides.

Limits: the two copies must have the same scale and orientation; a resized, rotated, flipped or
recompressed copy (JPEG) is not looked for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch

MAX_DIFFERENCE = 2 / 255
MIN_OVERLAP = 0.75
COARSE_SIZE = 32  # the coarse search runs on images whose larger side is 32..63 pixels
COARSE_SCORE = 0.2  # coarse mean squared difference / (var a + var b) below which a pair goes on
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as Pillow's RGB -> L


@dataclass(frozen=True)
class Duplicate:
    """``second`` is ``first`` shifted by ``offset``: ``second[y, x] ~ first[y + dy, x + dx]``
    over an ``overlap`` of (height, width) pixels, with mean absolute luma ``difference``
    (0..1 scale; multiply by 255 for 8-bit levels)."""

    first: str
    second: str
    offset: tuple[int, int]
    difference: float
    overlap: tuple[int, int]


def _luma(image: torch.Tensor, label: str) -> np.ndarray:
    if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
        raise ValueError(f"{label}: expected a CHW tensor with 1 or 3 channels, "
                         f"got shape {tuple(image.shape)}")
    x = image.detach().to("cpu", torch.float32).numpy()
    if x.shape[0] == 1:
        return np.ascontiguousarray(x[0])
    r, g, b = x[0], x[1], x[2]
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).astype(np.float32)


def _pyramid(y: np.ndarray) -> list[np.ndarray]:
    """Level k holds the means of 2^k x 2^k blocks (trailing odd rows/columns dropped)."""
    levels = [y]
    while min(levels[-1].shape) >= 8:
        z = levels[-1]
        h, w = z.shape[0] // 2 * 2, z.shape[1] // 2 * 2
        z = z[:h, :w]
        levels.append(0.25 * (z[0::2, 0::2] + z[1::2, 0::2] + z[0::2, 1::2] + z[1::2, 1::2]))
    return levels


def _blur(z: np.ndarray) -> np.ndarray:
    """Binomial [1, 2, 1] / 4 blur applied twice along both axes, edges repeated: enough that a
    block-grid phase difference of half a block costs little, even on texture like grass."""
    for _ in range(2):
        p = np.pad(z, 1, mode="edge")
        z = 0.25 * p[:-2] + 0.5 * p[1:-1] + 0.25 * p[2:]
        z = 0.25 * z[:, :-2] + 0.5 * z[:, 1:-1] + 0.25 * z[:, 2:]
    return z


def _overlap(size_a: int, size_b: int, d: int) -> int:
    """Length of the overlap along one axis when b starts at d in a's coordinates."""
    return max(0, min(size_a, d + size_b) - max(0, d))


class _Image:
    def __init__(self, label: str, tensor: torch.Tensor) -> None:
        self.label = label
        self.levels = _pyramid(_luma(tensor, label))
        self.shape = self.levels[0].shape
        self._blurred: dict[int, tuple[np.ndarray, float]] = {}
        self._spectra: dict[tuple[int, int, int], tuple[np.ndarray, ...]] = {}

    def blurred(self, level: int) -> tuple[np.ndarray, float]:
        """The blurred level (float64) and its variance."""
        if level not in self._blurred:
            z = _blur(self.levels[level].astype(np.float64))
            self._blurred[level] = z, float(z.var())
        return self._blurred[level]

    def spectra(self, level: int, pad: tuple[int, int]) -> tuple[np.ndarray, ...]:
        """rfft2 of the blurred level, its square and its support, zero-padded to ``pad``."""
        key = (level, *pad)
        if key not in self._spectra:
            z = self.blurred(level)[0]
            self._spectra[key] = tuple(np.fft.rfft2(v, pad) for v in (z, z * z, np.ones_like(z)))
        return self._spectra[key]


def _coarse_level(a: _Image, b: _Image) -> int:
    longest = max(*a.shape, *b.shape)
    level = max(0, int(math.floor(math.log2(longest / COARSE_SIZE))))
    return min(level, len(a.levels) - 1, len(b.levels) - 1)


def _valid_offsets(ha: int, hb: int, min_overlap: float) -> np.ndarray:
    """Offsets d (b starts at d in a) whose overlap covers min_overlap of the longer side."""
    need = min_overlap * max(ha, hb)
    d = np.arange(-hb + 1, ha)
    lengths = np.minimum(ha, d + hb) - np.maximum(0, d)
    return d[lengths >= need]


def _coarse_match(a: _Image, b: _Image, level: int, min_overlap: float
                  ) -> tuple[float, tuple[int, int]] | None:
    """Best offset at ``level`` by FFT and its normalised mean squared difference."""
    za, zb = a.levels[level], b.levels[level]
    (ha, wa), (hb, wb) = za.shape, zb.shape
    dys = _valid_offsets(ha, hb, min_overlap)
    dxs = _valid_offsets(wa, wb, min_overlap)
    if dys.size == 0 or dxs.size == 0:
        return None
    pad = (1 << (ha + hb).bit_length(), 1 << (wa + wb).bit_length())
    fa, fa2, fa1 = a.spectra(level, pad)
    fb, fb2, fb1 = b.spectra(level, pad)
    # sum over the overlap of (a - b)^2 = corr(a^2, 1_b) + corr(1_a, b^2) - 2 corr(a, b)
    sq = np.fft.irfft2(fa2 * fb1.conj() + fa1 * fb2.conj() - 2 * fa * fb.conj(), pad)
    sq = sq[np.ix_(dys % pad[0], dxs % pad[1])]
    count = np.outer(np.minimum(ha, dys + hb) - np.maximum(0, dys),
                     np.minimum(wa, dxs + wb) - np.maximum(0, dxs))
    msd = np.maximum(sq, 0) / count
    k = int(np.argmin(msd))
    i, j = divmod(k, msd.shape[1])
    scale = a.blurred(level)[1] + b.blurred(level)[1] + 1e-12
    return float(msd[i, j]) / scale, (int(dys[i]), int(dxs[j]))


def _windows(za: np.ndarray, zb: np.ndarray, dy: int, dx: int
             ) -> tuple[np.ndarray, np.ndarray] | None:
    (ha, wa), (hb, wb) = za.shape, zb.shape
    y0, y1 = max(0, dy), min(ha, dy + hb)
    x0, x1 = max(0, dx), min(wa, dx + wb)
    if y1 <= y0 or x1 <= x0:
        return None
    return za[y0:y1, x0:x1], zb[y0 - dy:y1 - dy, x0 - dx:x1 - dx]


def _refine(a: _Image, b: _Image, level: int, offset: tuple[int, int]
            ) -> tuple[float, tuple[int, int], tuple[int, int]]:
    """Follow the offset down to full resolution; full-resolution mean absolute difference."""
    dy, dx = offset
    for lv in range(level - 1, -1, -1):
        za, zb = a.levels[lv], b.levels[lv]
        best: tuple[float, int, int] | None = None
        for ey in range(-2, 3):
            for ex in range(-2, 3):
                cy, cx = 2 * dy + ey, 2 * dx + ex
                win = _windows(za, zb, cy, cx)
                if win is None:
                    continue
                diff = win[0] - win[1]
                err = float(np.abs(diff).mean() if lv == 0 else np.square(diff).mean())
                if best is None or err < best[0]:
                    best = (err, cy, cx)
        if best is None:
            return math.inf, (dy, dx), (0, 0)
        _, dy, dx = best
    win = _windows(a.levels[0], b.levels[0], dy, dx)
    if win is None:
        return math.inf, (dy, dx), (0, 0)
    return float(np.abs(win[0] - win[1]).mean()), (dy, dx), win[0].shape


def find_duplicates(images: Mapping[str, torch.Tensor], max_difference: float = MAX_DIFFERENCE,
                    min_overlap: float = MIN_OVERLAP) -> list[Duplicate]:
    """Pairs of ``images`` (label -> CHW float tensor in [0, 1], 1 or 3 channels, any size)
    that show the same picture up to a small offset or crop, or gray against RGB (see the
    module notes). Pairs come in the order of the labels in ``images``."""
    items = [_Image(label, t) for label, t in images.items()]
    found: list[Duplicate] = []
    for a, b in combinations(items, 2):
        (ha, wa), (hb, wb) = a.shape, b.shape
        if min(ha, hb) < min_overlap * max(ha, hb) or min(wa, wb) < min_overlap * max(wa, wb):
            continue
        level = _coarse_level(a, b)
        coarse = _coarse_match(a, b, level, min_overlap * 0.9)
        if coarse is None or coarse[0] > COARSE_SCORE:
            continue
        diff, offset, overlap = _refine(a, b, level, coarse[1])
        if (diff <= max_difference and overlap[0] >= min_overlap * max(ha, hb)
                and overlap[1] >= min_overlap * max(wa, wb)):
            found.append(Duplicate(a.label, b.label, offset, diff, overlap))
    return found

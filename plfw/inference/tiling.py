"""Tiled super-resolution inference: bounded memory on large images, with no visible seams.

A generator's activations on a whole 2000x2000 image need tens of gigabytes; run tile by tile
they need only one tile's worth. Each tile is a *core* of the low-resolution image grown by
``overlap`` pixels of context on every side (clipped at the image border). The model sees the
whole window, but only the core's part of its output is kept ("crop the centre"). Wherever the
model's receptive field reaches no farther than ``overlap`` LR pixels, every kept pixel sees the
same input as in a whole-image run, so the result equals untiled inference up to floating-point
rounding and there is no seam at all. Image borders are the real ones, so padding effects there
match the untiled run too.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


def upscale_tiled(model: Callable[[Tensor], Tensor], lr: Tensor, scale: int, tile: int = 128,
                  overlap: int = 16,
                  progress: Callable[[int, int], None] | None = None) -> Tensor:
    """Upscale ``lr`` ((1, 3, H, W) or (3, H, W), in [0, 1]) by ``scale``, a tile at a time.

    ``model`` maps a (1, 3, h, w) LR window to its (1, 3, scale*h, scale*w) SR window in [0, 1];
    the caller wraps any range conversion (and clamping) into it. A ``model`` with a true
    ``accepts_keep`` attribute is called as ``model(window, (top, left, height, width))`` and
    returns only that region's SR (the tile's core; :func:`plfw.inference.frozen.frozen_runner`).
    Returns a (3, sH, sW) tensor on the model output's device and dtype. ``tile`` is the side
    of a core in LR pixels (0: the whole image in one call); ``overlap`` is the context added
    around each core; the result is exact when the model's receptive field radius is at most
    ``overlap``. ``progress(done, total)`` is called after every tile.
    """
    if lr.dim() == 4 and lr.shape[0] == 1:
        lr = lr[0]
    if lr.dim() != 3 or lr.shape[0] != 3:
        raise ValueError(f"lr must be (1, 3, H, W) or (3, H, W), got {tuple(lr.shape)}")
    if scale < 1 or tile < 0 or overlap < 0:
        raise ValueError(f"need scale >= 1, tile >= 0 and overlap >= 0, "
                         f"got {scale}, {tile}, {overlap}")
    height, width = lr.shape[1:]
    rows = _spans(height, tile)
    cols = _spans(width, tile)
    total = len(rows) * len(cols)
    partial = bool(getattr(model, "accepts_keep", False))
    out: Tensor | None = None
    done = 0
    for y0, y1 in rows:
        for x0, x1 in cols:
            # Window = core plus context, clipped to the image.
            wy0, wy1 = max(y0 - overlap, 0), min(y1 + overlap, height)
            wx0, wx1 = max(x0 - overlap, 0), min(x1 + overlap, width)
            window = lr[None, :, wy0:wy1, wx0:wx1]
            core = (y0 - wy0, x0 - wx0, y1 - y0, x1 - x0)
            with torch.inference_mode():
                if partial:  # the model returns the core's SR only
                    sr = model(window, core)
                    oy = ox = 0
                    expected = (1, 3, scale * (y1 - y0), scale * (x1 - x0))
                else:
                    sr = model(window)
                    oy, ox = scale * core[0], scale * core[1]
                    expected = (1, 3, scale * (wy1 - wy0), scale * (wx1 - wx0))
            if tuple(sr.shape) != expected:
                raise ValueError(f"model turned a {wy1 - wy0}x{wx1 - wx0} tile into "
                                 f"{tuple(sr.shape)}, expected {expected} for scale {scale}")
            if out is None:
                # Allocated outside inference mode so callers may modify the result in place.
                out = torch.empty(3, scale * height, scale * width, dtype=sr.dtype,
                                  device=sr.device)
            out[:, scale * y0:scale * y1, scale * x0:scale * x1] = (
                sr[0, :, oy:oy + scale * (y1 - y0), ox:ox + scale * (x1 - x0)])
            del sr  # free this tile's output before the next tile's activations are made
            done += 1
            if progress is not None:
                progress(done, total)
    assert out is not None  # at least one tile: H and W are >= 1
    return out


def _spans(length: int, tile: int) -> list[tuple[int, int]]:
    """Split ``range(length)`` into ``ceil(length / tile)`` near-equal cores.

    Equal cores rather than full tiles plus a sliver: every window then has about the same
    size, so none is wastefully thin and peak memory is set by ``tile`` alone.
    """
    if length < 1:
        raise ValueError(f"image side must be >= 1, got {length}")
    n = 1 if tile == 0 else math.ceil(length / tile)
    edges = [round(i * length / n) for i in range(n + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))

"""Pictures people would rather look at than read: labelled side-by-side crop grids."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from plfw.storage.checkpoint import atomic_write_bytes

LABEL_H = 18
GAP = 4


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """A (C, size, size) centre crop (or the whole image when it is smaller)."""
    h, w = x.shape[-2:]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return x[..., top: top + size, left: left + size]


def _to_pil(x: torch.Tensor) -> Image.Image:
    x = x.detach().float().cpu().clamp(0, 1)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    arr = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def grid(rows: Sequence[Sequence[torch.Tensor]], labels: Sequence[str],
         row_labels: Sequence[str] | None = None, cell: int = 0) -> Image.Image:
    """Rows of equally sized images under column labels; ``cell`` upsizes each tile (nearest)."""
    tiles = [[_to_pil(x) for x in row] for row in rows]
    tw = max(t.width for row in tiles for t in row)
    th = max(t.height for row in tiles for t in row)
    if cell:
        factor = max(1, cell // max(tw, th))
        tw, th = tw * factor, th * factor
    cols = max(len(r) for r in tiles)
    canvas = Image.new("RGB", (cols * (tw + GAP) + GAP,
                               len(tiles) * (th + LABEL_H + GAP) + GAP), "white")
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(tiles):
        y = GAP + r * (th + LABEL_H + GAP)
        for c, tile in enumerate(row):
            x = GAP + c * (tw + GAP)
            text = labels[c] if c < len(labels) else ""
            if row_labels and c == 0:
                text = f"{row_labels[r]}: {text}"
            draw.text((x + 2, y + 3), text, fill="black")
            canvas.paste(tile.resize((tw, th), Image.NEAREST), (x, y + LABEL_H))
    return canvas


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Write a PNG atomically (no half-written picture if the run is killed)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)

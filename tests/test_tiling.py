"""Tiled inference must match a whole-image run for a real convolutional SR net."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from plfw.inference.tiling import upscale_tiled

PHOTO = Path(__file__).resolve().parents[1] / "assets" / "photos" / "val" / "chelsea.png"
SCALE = 4
# Receptive-field radius of the net below, in LR pixels: three 3x3 convs at LR (3) plus one
# at SR resolution (1/4), so an overlap of 4 covers it.
RADIUS = 4


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.PReLU(16),
        nn.Conv2d(16, 16, 3, padding=1), nn.PReLU(16),
        nn.Conv2d(16, 3 * SCALE**2, 3, padding=1), nn.PixelShuffle(SCALE),
        nn.Conv2d(3, 3, 3, padding=1), nn.Sigmoid(),
    )
    return net.eval()


@pytest.fixture(scope="module")
def lr() -> torch.Tensor:
    """A 53x71 crop of the cat: odd sides, so no tile size divides them."""
    rgb = np.asarray(Image.open(PHOTO).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(rgb[100:153, 150:221]).permute(2, 0, 1).contiguous()


@pytest.fixture(scope="module")
def whole(lr: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return _net()(lr[None])[0]


@pytest.mark.parametrize("tile", [0, 16, 23, 53, 500])
def test_tiled_equals_untiled(lr: torch.Tensor, whole: torch.Tensor, tile: int) -> None:
    out = upscale_tiled(_net(), lr, SCALE, tile=tile, overlap=RADIUS)
    assert out.shape == (3, SCALE * 53, SCALE * 71)
    assert (out - whole).abs().max().item() < 1 / 255


def test_too_little_overlap_shows_seams(lr: torch.Tensor, whole: torch.Tensor) -> None:
    """Guards the test above: without context the tiles really do differ from the whole run."""
    out = upscale_tiled(_net(), lr, SCALE, tile=16, overlap=0)
    assert (out - whole).abs().max().item() > 1 / 255


def test_batched_input_and_in_place_use(lr: torch.Tensor, whole: torch.Tensor) -> None:
    out = upscale_tiled(_net(), lr[None], SCALE, tile=20, overlap=RADIUS)
    out.clamp_(0, 1)  # a normal tensor, not an inference-mode one
    assert (out - whole).abs().max().item() < 1 / 255


def test_progress_counts(lr: torch.Tensor) -> None:
    calls: list[tuple[int, int]] = []
    upscale_tiled(_net(), lr, SCALE, tile=20, overlap=RADIUS,
                  progress=lambda done, total: calls.append((done, total)))
    total = 3 * 4  # ceil(53 / 20) rows by ceil(71 / 20) columns
    assert calls == [(i, total) for i in range(1, total + 1)]

    calls.clear()
    upscale_tiled(_net(), lr, SCALE, tile=0, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 1)]


def test_wrong_scale_or_shape_is_reported(lr: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="expected"):
        upscale_tiled(_net(), lr, 2, tile=32)
    with pytest.raises(ValueError, match="lr must be"):
        upscale_tiled(_net(), lr[:1], SCALE)

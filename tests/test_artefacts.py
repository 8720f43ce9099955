"""periodic_db flags a sub-pixel grid and leaves clean photos alone."""

from __future__ import annotations

import pytest
import torch

import plfw
from plfw.errors import UserError
from plfw.evaluate import bicubic
from plfw.images import load_gray_or_rgb
from plfw.imresize import bicubic_downscale_uint8
from tests.conftest import REPO


def photo(name: str) -> torch.Tensor:
    hr = load_gray_or_rgb(REPO / "assets" / "photos" / "val" / f"{name}.png").expand(3, -1, -1)
    h, w = hr.shape[-2:]
    return hr[:, : h - h % 4, : w - w % 4]


def grid(shape: torch.Size) -> torch.Tensor:
    """A +-0.5 checkerboard of 2x2 cells repeating every 4 pixels (a x4 sub-pixel grid)."""
    yy, xx = torch.meshgrid(torch.arange(shape[-2]), torch.arange(shape[-1]), indexing="ij")
    return (((yy % 4) < 2) ^ ((xx % 4) < 2)).float() - 0.5


@pytest.mark.parametrize("name", ["camera", "chelsea", "grass"])
def test_grid_is_flagged_and_clean_images_are_not(name: str) -> None:
    metric = plfw.build("metric", "periodic_db")
    assert metric.higher_is_better is False and metric.networks == ()
    hr = photo(name)
    assert metric(hr, hr) == pytest.approx(0.0, abs=1e-9)
    # a grid of +-1.3 grey levels (0.01 peak to peak) on the photo: clearly flagged
    assert metric((hr + 0.01 * grid(hr.shape)).clamp(0, 1), hr) > 1.5
    assert metric((hr + 0.02 * grid(hr.shape)).clamp(0, 1), hr) > 5.0
    # clean: MATLAB bicubic from the LR, and the photo flipped (same content, other pixels)
    lr = bicubic_downscale_uint8(hr * 255, 4).float() / 255
    assert 0 <= metric(bicubic(4)(lr), hr) < 3.0
    assert 0 <= metric(hr.flip(-1), hr) < 1.0
    # a regular texture at another frequency (1/3 cycle per pixel) is not a x4 grid
    yy, xx = torch.meshgrid(torch.arange(hr.shape[-2]), torch.arange(hr.shape[-1]),
                            indexing="ij")
    ripple = torch.cos(2 * torch.pi * xx / 3) * torch.cos(2 * torch.pi * yy / 3)
    assert metric((hr + 0.02 * ripple).clamp(0, 1), hr) < 1.5


def test_bad_parameters_and_small_images_are_one_line() -> None:
    with pytest.raises(UserError, match="tile a multiple of period"):
        plfw.build("metric", {"name": "periodic_db", "tile": 30})
    metric = plfw.build("metric", "periodic_db")
    small = torch.rand(3, 20, 20)
    with pytest.raises(UserError, match="smaller than 4 periods"):
        metric(small, small)
    # an image smaller than a tile uses a smaller tile and still sees a grid
    hr = photo("camera")[:, :40, :40]
    assert metric((hr + 0.02 * grid(hr.shape)).clamp(0, 1), hr) > 1.5

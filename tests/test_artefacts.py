"""periodic_db flags a sub-pixel grid and leaves clean photos alone; the grid loss penalises it."""

from __future__ import annotations

import pytest
import torch

import plfw
from plfw.core.errors import UserError
from plfw.evaluation.evaluate import bicubic
from plfw.imaging.images import load_gray_or_rgb
from plfw.imaging.imresize import bicubic_downscale_uint8
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


def test_grid_error_measures_the_grid_locked_part_of_the_error() -> None:
    """grid_error in grey levels: a pattern on one sub-pixel phase of amplitude a has RMS
    periodic part a * sqrt(15) / 16 over the 16 phases; unpatterned differences score ~0."""
    metric = plfw.build("metric", "grid_error")
    assert metric.higher_is_better is False and metric.networks == ()
    hr = photo("camera")
    assert metric(hr, hr) == pytest.approx(0.0, abs=1e-9)
    spike = torch.zeros_like(hr)
    spike[..., ::4, ::4] = 8 / 255  # +8 grey levels on phase (0, 0), in every channel
    assert metric(hr + spike, hr) == pytest.approx(8 * 15**0.5 / 16, rel=1e-3)
    assert metric(hr + 0.01 * grid(hr.shape), hr) > 1.0  # the test checkerboard: 1.28 levels
    # not grid-locked: the photo shifted by one pixel, a 1/3-cycle ripple, bicubic
    assert metric(hr.roll(1, -1), hr) < 0.3
    yy, xx = torch.meshgrid(torch.arange(hr.shape[-2]), torch.arange(hr.shape[-1]),
                            indexing="ij")
    ripple = torch.cos(2 * torch.pi * xx / 3) * torch.cos(2 * torch.pi * yy / 3)
    assert metric(hr + 0.02 * ripple, hr) < 0.1
    lr = bicubic_downscale_uint8(hr * 255, 4).float() / 255
    assert metric(bicubic(4)(lr), hr) < 0.5
    with pytest.raises(UserError, match="window >= 0"):
        plfw.build("metric", {"name": "grid_error", "window": -1})
    with pytest.raises(UserError, match="smaller than one period"):
        metric(hr[..., :10, :10], hr[..., :10, :10])


def test_grid_loss_sees_only_the_sub_pixel_period() -> None:
    loss = plfw.build("loss", "grid")
    hr = photo("chelsea")[None]
    assert loss(hr, hr).item() == 0.0
    gridded = hr + 0.02 * grid(hr.shape)
    assert loss(gridded, hr).item() == pytest.approx(0.01**2, rel=0.02)  # +-0.01 per phase
    # what is not period-4 costs (nearly) nothing: a brightness offset, a blur, a 1/3 ripple
    assert loss(hr + 0.1, hr).item() < 1e-12
    yy, xx = torch.meshgrid(torch.arange(hr.shape[-2]), torch.arange(hr.shape[-1]),
                            indexing="ij")
    ripple = 0.02 * torch.cos(2 * torch.pi * xx / 3) * torch.cos(2 * torch.pi * yy / 3)
    assert loss(hr + ripple, hr).item() < 0.05 * loss(gridded, hr).item()
    # a blur's residual is the photo's missing detail, whose share at the grid frequencies
    # counts (so the loss also asks for that detail back); a +-0.01 grid costs twice as much
    lr = bicubic_downscale_uint8(hr[0] * 255, 4).float() / 255
    assert loss(bicubic(4)(lr)[None], hr).item() < 0.6 * loss(gridded, hr).item()


def test_grid_loss_gradient_removes_the_grid() -> None:
    loss = plfw.build("loss", "grid")
    hr = photo("camera")[None]
    sr = (hr + 0.02 * grid(hr.shape)).requires_grad_(True)
    for _ in range(50):  # plain gradient descent on the SR image alone (a mean over pixels:
        (g,) = torch.autograd.grad(loss(sr, hr), sr)  # tiny gradients, hence the step size)
        sr = (sr - 1e4 * g).detach().requires_grad_(True)
    metric = plfw.build("metric", "periodic_db")
    assert metric(sr.detach()[0].clamp(0, 1), hr[0]) < 0.5


def test_grid_loss_parameters_are_checked() -> None:
    with pytest.raises(UserError, match="loss grid"):
        plfw.build("loss", {"name": "grid", "period": 1})


def test_peak_loss_flags_the_grid_and_not_other_textures() -> None:
    loss = plfw.build("loss", "peak")
    hr = torch.stack([photo("camera")[:, :96, :96], photo("chelsea")[:, :96, :96]])
    assert loss(hr, hr).item() == 0.0
    gridded = hr + 0.01 * grid(hr.shape)
    assert loss(gridded, hr).item() > 1.0  # the peaks stand e-fold and more above HR's
    yy, xx = torch.meshgrid(torch.arange(96), torch.arange(96), indexing="ij")
    ripple = 0.02 * torch.cos(2 * torch.pi * xx / 3) * torch.cos(2 * torch.pi * yy / 3)
    assert loss(hr + ripple, hr).item() < 0.01 * loss(gridded, hr).item()
    assert loss(hr + 0.1, hr).item() == pytest.approx(0.0, abs=1e-6)  # offsets are not peaks


def test_peak_loss_removes_a_grid_from_a_smooth_image_with_a_small_change() -> None:
    """Where SR is smoother than HR (as every SR is), the peak loss clears the grid: Adam on
    the pixels of bicubic + grid, held near it by an MSE term, brings periodic_db under 1 dB
    while changing the image by no more than twice the grid's own RMS."""
    peak, metric = plfw.build("loss", "peak"), plfw.build("metric", "periodic_db")
    hr = photo("camera")[None]
    lr = bicubic_downscale_uint8(hr[0] * 255, 4).float() / 255
    start = (bicubic(4)(lr)[None] + 0.01 * grid(hr.shape)).clamp(0, 1)
    assert metric(start[0], hr[0]) > 3.0
    sr = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([sr], lr=1e-3)
    for _ in range(100):
        loss = 1e3 * (sr - start).square().mean() + peak(sr, hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = sr.detach().clamp(0, 1)
    assert metric(out[0], hr[0]) < 1.0
    assert (out - start).square().mean().sqrt() < 0.01  # the grid's RMS is 0.005


def test_peak_loss_parameters_are_checked() -> None:
    with pytest.raises(UserError, match="loss peak"):
        plfw.build("loss", {"name": "peak", "tile": 30})
    with pytest.raises(UserError, match="smaller than 4 periods"):
        plfw.build("loss", "peak")(torch.rand(1, 3, 12, 12), torch.rand(1, 3, 12, 12))


def chroma_grid(shape: torch.Size) -> torch.Tensor:
    """The grid in the colour channels with weights that sum to zero in BT.601 luma: red and
    blue up where green is down. A luma measure is blind to it; a grey-image view (the mean of
    the channels) and the eye are not."""
    w = torch.tensor([0.5, -0.5, 0.5 * (0.587 - 0.299) / 0.114])
    assert abs(float((w * torch.tensor([0.299, 0.587, 0.114])).sum())) < 1e-6
    return w[:, None, None] * grid(shape)


def test_periodic_db_rgb_sees_a_grid_hidden_from_luma() -> None:
    luma_only, rgb = plfw.build("metric", "periodic_db"), plfw.build("metric", "periodic_db_rgb")
    hr = photo("chelsea")
    hidden = (hr + 0.01 * chroma_grid(hr.shape)).clamp(0, 1)
    assert luma_only(hidden, hr) < 0.5 < 3.0 < rgb(hidden, hr)
    assert rgb(hr, hr) == pytest.approx(0.0, abs=1e-9)
    assert rgb((hr + 0.01 * grid(hr.shape)).clamp(0, 1), hr) > 1.5  # a plain grid too
    grey = hr.mean(0, keepdim=True)  # one channel: the same as periodic_db
    assert rgb(grey + 0.01 * grid(grey.shape), grey) == pytest.approx(
        luma_only(grey + 0.01 * grid(grey.shape), grey))


def test_peak_loss_on_rgb_channels_sees_the_hidden_grid() -> None:
    hr = torch.stack([photo("camera")[:, :96, :96], photo("chelsea")[:, :96, :96]])
    hidden = hr + 0.01 * chroma_grid(hr.shape)
    assert plfw.build("loss", "peak")(hidden, hr).item() < 0.05
    rgb = plfw.build("loss", {"name": "peak", "channels": "rgb"})
    assert rgb(hidden, hr).item() > 1.0
    assert rgb(hr, hr).item() == 0.0
    with pytest.raises(UserError, match="channels"):
        plfw.build("loss", {"name": "peak", "channels": "yuv"})

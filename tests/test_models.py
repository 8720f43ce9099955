"""The SRGAN paper's generator and discriminator plugins: shapes, sizes, options, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import plfw
from plfw.core.errors import UserError
from plfw.imaging.imresize import imresize


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny(**params) -> nn.Module:
    return plfw.build("generator", {"name": "srresnet", "blocks": 1, "channels": 8, **params})


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_generator_scales_height_and_width(scale: int) -> None:
    g = tiny(scale=scale)
    assert g.scale == scale
    assert g(torch.rand(2, 3, 5, 7)).shape == (2, 3, 5 * scale, 7 * scale)


def test_generator_rejects_other_scales() -> None:
    with pytest.raises(UserError, match="scale must be 2, 4 or 8"):
        tiny(scale=3)


def test_paper_generator_size_and_output_range() -> None:
    g = plfw.build("generator", "srresnet")
    assert g.output_range == (-1.0, 1.0)
    # B=16, C=64, x4; convs followed by BN have no bias, PReLU is channel-wise:
    #   head   9*9*3*64 + 64 (bias) + 64 (PReLU)                    =    15,680
    #   block  2 * 3*3*64*64 + 2 * 128 (BN) + 64 (PReLU) = 74,048; x16 = 1,184,768
    #   fuse   3*3*64*64 + 128 (BN)                                 =    36,992
    #   upsample stage 3*3*64*256 + 256 + 64 (PReLU) = 147,776; x2  =   295,552
    #   tail   9*9*64*3 + 3                                         =    15,555
    assert n_params(g) == 1_548_547
    # x8 has one more stage: 3*3*C*4C + 4C (bias) + C (PReLU), here with C = 8.
    assert n_params(tiny(scale=8)) - n_params(tiny(scale=4)) == 9 * 8 * 32 + 32 + 8


def test_generator_bad_output_range_is_user_error() -> None:
    with pytest.raises(UserError, match="output_range"):
        tiny(output_range=[1.0, -1.0])


def test_batch_norm_statistics_are_frozen_in_eval_mode() -> None:
    g = tiny().eval()
    x = torch.rand(3, 3, 6, 6)
    with torch.no_grad():
        alone = g(x[:1])
        batched = g(x)
    torch.testing.assert_close(batched[:1], alone)


def test_bicubic_residual_starts_at_bicubic_and_learns() -> None:
    g = tiny(residual="bicubic", output_range=[0.0, 1.0])
    lr, hr = torch.rand(2, 3, 6, 6), torch.rand(2, 3, 24, 24)
    torch.testing.assert_close(g(lr), imresize(lr, scale=4))
    opt = torch.optim.Adam(g.parameters(), lr=1e-3)
    before = nn.functional.mse_loss(g(lr), hr).item()
    for _ in range(5):
        opt.zero_grad()
        loss = nn.functional.mse_loss(g(lr), hr)
        loss.backward()
        opt.step()
    assert nn.functional.mse_loss(g(lr), hr).item() < before


def test_bicubic_residual_maps_bicubic_into_output_range() -> None:
    g = tiny(residual="bicubic")
    lr = torch.rand(1, 3, 6, 6)
    expected = imresize(lr, scale=4) * 2 - 1
    torch.testing.assert_close(g(lr), expected)
    with torch.autocast("cpu", torch.bfloat16):  # the bicubic base stays fp32 under autocast
        torch.testing.assert_close(g(lr), expected)


@pytest.mark.parametrize("size", [96, 128, 64])
def test_discriminator_accepts_multiples_of_16(size: int) -> None:
    d = plfw.build("discriminator", {"name": "srgan", "input_size": size, "channels": 8})
    logits = d(torch.rand(3, 3, size, size))
    assert logits.shape == (3,)
    assert isinstance(d.classifier[-1], nn.Linear)  # logits: the loss applies the sigmoid


def test_discriminator_rejects_other_sizes() -> None:
    with pytest.raises(UserError, match="multiple of 16"):
        plfw.build("discriminator", {"name": "srgan", "input_size": 100})
    d = plfw.build("discriminator", {"name": "srgan", "input_size": 64, "channels": 8})
    with pytest.raises(UserError, match="input_size"):
        d(torch.rand(1, 3, 96, 96))


def test_paper_discriminator_size() -> None:
    d = plfw.build("discriminator", "srgan")
    # convs (first with bias, the others without bias + BN 2*C each):
    #   3*3*3*64 + 64 = 1,792; then 36,992 + 73,984 + 147,712 + 295,424 + 590,336
    #   + 1,180,672 + 2,360,320 = 4,687,232 in all;
    # dense 512*6*6*1024 + 1024 = 18,875,392; dense 1024 + 1 = 1,025.
    assert n_params(d) == 23_563_649
    assert d(torch.rand(2, 3, 96, 96)).shape == (2,)


def out_of_place(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose activations all allocate their output."""
    twin = copy.deepcopy(module)
    for m in twin.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    return twin


@pytest.mark.parametrize("batch_norm", [True, False])
def test_discriminator_in_place_activations_change_no_gradient(batch_norm: bool) -> None:
    torch.manual_seed(0)
    d = plfw.build("discriminator", {"name": "srgan", "input_size": 32, "channels": 8,
                                     "batch_norm": batch_norm})
    assert any(getattr(m, "inplace", False) for m in d.modules())
    twin = out_of_place(d)
    x = torch.randn(4, 3, 32, 32)
    grads = []
    for net in (d, twin):
        xi = x.clone().requires_grad_(True)
        net(xi).square().sum().backward()
        grads.append([xi.grad, *(p.grad for p in net.parameters())])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_icnr_starts_without_a_subpixel_grid() -> None:
    """On a flat input, a random sub-pixel conv makes a 4x4 pattern; ICNR makes none."""
    def grid_strength(icnr: bool) -> float:
        torch.manual_seed(0)
        g = plfw.build("generator", {"name": "srresnet", "icnr": icnr, "blocks": 2,
                                     "channels": 16}).eval()
        with torch.no_grad():
            y = g(torch.full((1, 3, 48, 48), 0.5))[0, :, 80:-80, 80:-80]  # away from padding
        return float(y.unfold(1, 4, 4).unfold(2, 4, 4).std(dim=(-1, -2)).mean())

    assert grid_strength(False) > 1e-3
    assert grid_strength(True) < 1e-6
    g = plfw.build("generator", {"name": "srresnet", "icnr": True, "blocks": 1, "channels": 8})
    w = g.upsample[0][0].weight
    assert torch.equal(w[0], w[3]) and not torch.equal(w[0], w[4])  # 4 copies per channel

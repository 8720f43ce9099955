"""A convolution after a pixel shuffle, computed before it: same values, same gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import plfw


@pytest.mark.parametrize(("factor", "kernel", "bias"), [(2, 9, True), (2, 3, False), (3, 5, True),
                                                        (2, 1, True), (4, 7, True)])
def test_values_and_gradients_equal_the_conv_after_the_shuffle(factor: int, kernel: int,
                                                               bias: bool) -> None:
    torch.manual_seed(factor * 10 + kernel)
    weight = torch.randn(3, 5, kernel, kernel, requires_grad=True)
    b = torch.randn(3, requires_grad=True) if bias else None
    x = torch.randn(2, 5 * factor * factor, 7, 6, requires_grad=True)
    direct = F.conv2d(F.pixel_shuffle(x, factor), weight, b, padding=kernel // 2)
    moved = plfw.conv_after_shuffle(x, weight, b, factor)
    assert moved.shape == direct.shape
    # Borders included: zero padding of the small grid is zero padding of the large one.
    assert torch.allclose(moved, direct, atol=1e-5), float((moved - direct).abs().max())
    upstream = torch.randn_like(direct)
    leaves = [weight, x] + ([b] if bias else [])
    want = torch.autograd.grad(direct, leaves, upstream)
    got = torch.autograd.grad(moved, leaves, upstream)
    for g_want, g_got in zip(want, got, strict=True):
        assert torch.allclose(g_got, g_want, atol=1e-4), float((g_got - g_want).abs().max())


def test_channels_last_input_gives_the_same_values() -> None:
    torch.manual_seed(0)
    weight = torch.randn(3, 8, 9, 9)
    x = torch.randn(2, 32, 6, 6)
    plain = plfw.conv_after_shuffle(x, weight, None, 2)
    last = plfw.conv_after_shuffle(x.contiguous(memory_format=torch.channels_last), weight,
                                   None, 2)
    assert torch.allclose(plain, last, rtol=1e-5, atol=1e-4)


def test_even_kernels_are_refused() -> None:
    with pytest.raises(ValueError, match="odd square"):
        plfw.subpixel_weight(torch.zeros(3, 4, 4, 4), 2)


def test_first_use_in_inference_mode_does_not_spoil_later_training() -> None:
    weight = torch.randn(3, 2, 5, 5)
    with torch.inference_mode():
        plfw.conv_after_shuffle(torch.randn(1, 8, 4, 4), weight, None, 2)
    trained = weight.clone().requires_grad_(True)
    plfw.conv_after_shuffle(torch.randn(1, 8, 4, 4), trained, None, 2).sum().backward()
    assert trained.grad is not None

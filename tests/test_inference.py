"""Frozen inference copies compute the trained generator's function, only faster."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import plfw
from plfw.device.runtime import make_runtime
from plfw.inference.frozen import fold_batch_norm, frozen_runner, inference_copy
from plfw.inference.generators import batch_runner


def _randomise_batch_norm(module: nn.Module, seed: int = 0) -> None:
    """Give every batch norm non-trivial running statistics and affine parameters, as a
    trained network has (fresh ones are the identity, which would hide a wrong fold)."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)


def test_fold_batch_norm_keeps_the_function_and_removes_the_norms() -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 4, 3, padding=1), nn.BatchNorm2d(4))
    _randomise_batch_norm(net)
    net.eval()
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        want = net(x)
        folded = fold_batch_norm(net)
        got = folded(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert torch.allclose(got, want, atol=1e-5)


def test_fold_batch_norm_leaves_training_mode_norms_alone() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    fold_batch_norm(net)
    assert isinstance(net[1], nn.BatchNorm2d)


@pytest.mark.parametrize("spec", [
    {"name": "srresnet", "blocks": 2, "channels": 8},
    {"name": "srresnet", "blocks": 1, "channels": 4, "scale": 2, "residual": "bicubic"},
    {"name": "srresnet", "blocks": 1, "channels": 4, "scale": 8, "batch_norm": False},
])
def test_inference_copy_of_srresnet_equals_the_original(spec: dict) -> None:
    torch.manual_seed(2)
    g = plfw.build("generator", spec)
    _randomise_batch_norm(g)
    if spec.get("residual") == "bicubic":  # its tail starts at zero: make it do something
        nn.init.normal_(g.tail.weight, std=0.02)
    g.train()
    x = torch.rand(2, 3, 11, 13)
    with torch.no_grad():
        want = g.eval()(x)
    g.train()
    frozen = inference_copy(g)
    with torch.no_grad():
        got = frozen(x)
    assert torch.allclose(got, want, atol=1e-4), float((got - want).abs().max())
    # The original is untouched: still training, still with its tail and its batch norms.
    assert g.training and isinstance(g.tail, nn.Conv2d)
    assert not any(p.requires_grad for p in frozen.parameters())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())


def test_frozen_runner_matches_the_live_runner() -> None:
    torch.manual_seed(3)
    g = plfw.build("generator", {"name": "srresnet", "blocks": 2, "channels": 8})
    _randomise_batch_norm(g)
    rt = make_runtime("cpu", "fp32", "true")
    lr = torch.rand(1, 3, 10, 12)
    live = batch_runner(g, (-1.0, 1.0), rt)(lr)
    frozen = frozen_runner(g, (-1.0, 1.0), rt)(lr)
    assert frozen.shape == live.shape == (1, 3, 40, 48)
    assert (frozen - live).abs().max() * 255 < 0.01


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_keep_returns_exactly_that_region_of_the_whole_image(scale: int) -> None:
    """What the tiler relies on: the SR of a region asked for equals that region of the SR of
    the whole window, at the borders and inside."""
    torch.manual_seed(4)
    g = plfw.build("generator", {"name": "srresnet", "blocks": 1, "channels": 4,
                                 "scale": scale, "residual": "bicubic"})
    _randomise_batch_norm(g)
    nn.init.normal_(g.tail.weight, std=0.05)
    frozen = inference_copy(g)
    assert frozen.accepts_keep
    lr = torch.rand(1, 3, 17, 19)
    with torch.no_grad():
        whole = frozen(lr)
        for top, left, h, w in [(0, 0, 5, 6), (6, 7, 4, 3), (12, 13, 5, 6), (0, 0, 17, 19)]:
            part = frozen(lr, (top, left, h, w))
            want = whole[..., scale * top:scale * (top + h), scale * left:scale * (left + w)]
            assert part.shape == want.shape
            assert torch.allclose(part, want, atol=1e-5)


def test_tiled_frozen_runner_equals_the_whole_image_run() -> None:
    from plfw.inference.tiling import upscale_tiled

    torch.manual_seed(5)
    g = plfw.build("generator", {"name": "srresnet", "blocks": 1, "channels": 8})
    _randomise_batch_norm(g)
    run = frozen_runner(g, (-1.0, 1.0), make_runtime("cpu", "fp32", "true"))
    lr = torch.rand(3, 30, 26)
    whole = upscale_tiled(run, lr, 4, tile=0)
    # The receptive field of 1 block is 4 (head) + 3 (three 3x3 convs) + upsampling < 12.
    tiled = upscale_tiled(run, lr, 4, tile=10, overlap=12)
    assert torch.allclose(tiled, whole, atol=1e-5)

"""Built-in losses against hand computations, and the perceptual loss's gradient and range rules."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import plfw
from plfw.core.errors import UserError

RANDOM_VGG = {"name": "vgg19", "weights": "none"}
CAFFE_VGG = {"name": "vgg19", "weights": "caffe"}


def images(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth colour gradients plus a little texture: photo-like enough for a loss network."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = torch.stack([0.5 + 0.4 * torch.sin(6 * x + 2 * y), 0.5 + 0.4 * torch.cos(5 * y), x * y])
    return (base + 0.05 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)


def blurred(hr: torch.Tensor) -> torch.Tensor:
    """A stand-in SR output: HR down- and up-sampled x4."""
    lr = F.interpolate(hr, scale_factor=0.25, mode="bicubic", antialias=True)
    return F.interpolate(lr, scale_factor=4, mode="bicubic").clamp(0, 1)


def perceptual(**params) -> torch.nn.Module:
    return plfw.build("loss", {"name": "perceptual", "network": RANDOM_VGG,
                               "layers": {"relu2_2": 1.0}, **params})


# --- pixel losses -----------------------------------------------------------------------------

def test_mse_and_l1_match_hand_values() -> None:
    sr = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    hr = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    # differences -1, 0, 2, 3
    assert plfw.build("loss", "mse")(sr, hr).item() == pytest.approx((1 + 0 + 4 + 9) / 4)
    assert plfw.build("loss", "l1")(sr, hr).item() == pytest.approx((1 + 0 + 2 + 3) / 4)


def test_pixel_losses_take_no_parameters() -> None:
    with pytest.raises(UserError, match="takes no parameters"):
        plfw.build("loss", {"name": "mse", "weight": 1.0})


# --- adversarial ------------------------------------------------------------------------------

REAL = [2.0, -1.0]
FAKE = [0.5, -3.0]


def _sig(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def _relativistic() -> tuple[float, float]:
    mr, mf = _mean(REAL), _mean(FAKE)
    d_real = [_sig(r - mf) for r in REAL]  # D_Ra(x_r, x_f)
    d_fake = [_sig(f - mr) for f in FAKE]  # D_Ra(x_f, x_r)
    g = -_mean(math.log(1 - d) for d in d_real) - _mean(math.log(d) for d in d_fake)
    d = -_mean(math.log(d) for d in d_real) - _mean(math.log(1 - d) for d in d_fake)
    return g, d


EXPECTED = {
    "vanilla": (
        -_mean(math.log(_sig(f)) for f in FAKE),
        -_mean(math.log(_sig(r)) for r in REAL) - _mean(math.log(1 - _sig(f)) for f in FAKE),
    ),
    "lsgan": (
        _mean((f - 1) ** 2 for f in FAKE),
        _mean((r - 1) ** 2 for r in REAL) + _mean(f**2 for f in FAKE),
    ),
    "hinge": (
        -_mean(FAKE),
        _mean(max(0, 1 - r) for r in REAL) + _mean(max(0, 1 + f) for f in FAKE),
    ),
    "relativistic": _relativistic(),
}


@pytest.mark.parametrize("mode", sorted(EXPECTED))
def test_adversarial_modes_match_hand_values(mode: str) -> None:
    loss = plfw.build("loss", {"name": "adversarial", "mode": mode})
    assert loss.adversarial is True
    real, fake = torch.tensor(REAL), torch.tensor(FAKE)
    g, d = EXPECTED[mode]
    assert loss.generator_loss(real, fake).item() == pytest.approx(g, rel=1e-6)
    assert loss.discriminator_loss(real, fake).item() == pytest.approx(d, rel=1e-6)
    # discriminators may return (N, 1) as well as (N,)
    assert loss.generator_loss(real[:, None], fake[:, None]).item() == pytest.approx(g, rel=1e-6)


def test_vanilla_generator_loss_is_minus_log_sigmoid_and_needs_no_real_logits() -> None:
    loss = plfw.build("loss", "adversarial")
    fake = torch.tensor([-20.0, 0.0, 30.0])  # extreme logits stay finite (no log(sigmoid))
    expected = -torch.log(torch.sigmoid(torch.tensor([-20.0, 0.0, 30.0], dtype=torch.float64)))
    assert loss.generator_loss(None, fake).item() == pytest.approx(expected.mean().item())
    assert not loss.uses_real_in_generator


def test_relativistic_generator_needs_real_logits() -> None:
    loss = plfw.build("loss", {"name": "adversarial", "mode": "relativistic"})
    assert loss.uses_real_in_generator
    with pytest.raises(ValueError, match="real"):
        loss.generator_loss(None, torch.zeros(2))


def test_unknown_adversarial_mode_is_a_user_error() -> None:
    with pytest.raises(UserError, match="did you mean: hinge"):
        plfw.build("loss", {"name": "adversarial", "mode": "hinj"})


# --- total variation --------------------------------------------------------------------------

TV_IMAGE = torch.tensor([[[[0.0, 1.0], [3.0, 5.0]]]])  # horizontal 1, 2; vertical 3, 4


@pytest.mark.parametrize(("kind", "reduction", "expected"), [
    ("absolute", "mean", (1 + 2 + 3 + 4) / 4),
    ("squared", "mean", (1 + 4 + 9 + 16) / 4),
    ("absolute", "sum", 10.0),
    ("squared", "sum", 30.0),
])
def test_tv_matches_hand_values(kind: str, reduction: str, expected: float) -> None:
    tv = plfw.build("loss", {"name": "tv", "kind": kind, "reduction": reduction})
    assert tv(TV_IMAGE, torch.zeros(1)).item() == pytest.approx(expected)


def test_tv_ignores_hr_and_is_zero_on_flat_images() -> None:
    tv = plfw.build("loss", "tv")
    assert tv(torch.full((2, 3, 5, 5), 0.3), None).item() == 0.0
    sr = images().requires_grad_(True)
    tv(sr, torch.rand(1)).backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0


def test_tv_rejects_unknown_kind() -> None:
    with pytest.raises(UserError, match="tv.kind"):
        plfw.build("loss", {"name": "tv", "kind": "l2"})


# --- perceptual -------------------------------------------------------------------------------

def test_perceptual_is_zero_for_identical_images() -> None:
    hr = images()
    assert perceptual()(hr, hr).item() == 0.0


def test_feature_scale_scales_mse_by_its_square_and_l1_linearly() -> None:
    hr = images()
    sr = blurred(hr)
    for criterion, power in (("mse", 2), ("l1", 1)):
        torch.manual_seed(0)
        one = perceptual(criterion=criterion, feature_scale=1.0)(sr, hr).item()
        torch.manual_seed(0)
        paper = perceptual(criterion=criterion, feature_scale=1 / 12.75)(sr, hr).item()
        torch.manual_seed(0)
        default = perceptual(criterion=criterion)(sr, hr).item()
        assert one > 0
        assert paper == pytest.approx(one / 12.75**power, rel=1e-4)
        assert default == paper  # the paper's 1/12.75 by default (issue 36; it was 1.0)


def test_the_perceptual_defaults_are_the_papers_vgg54() -> None:
    from plfw_builtins.losses.srgan import PerceptualParams

    p = PerceptualParams()
    assert (p.network, p.layers, p.criterion, p.feature_scale) == ("vgg19", None, "mse",
                                                                   1 / 12.75)
    assert plfw.build("loss", {"name": "perceptual", "network": RANDOM_VGG}).layers == {
        "relu5_4": 1.0}


def test_layer_weights_add_up() -> None:
    hr = images()
    sr = blurred(hr)
    torch.manual_seed(0)
    both = perceptual(layers={"relu1_2": 2.0, "relu2_2": 0.5}, feature_scale=1.0)(sr, hr).item()
    torch.manual_seed(0)
    net = perceptual(layers={"relu1_2": 1.0, "relu2_2": 1.0}).network
    feats = {k: [net(net.input_spec.convert(x))[k] for x in (sr, hr)] for k in net.taps}
    expected = 2.0 * F.mse_loss(*feats["relu1_2"]) + 0.5 * F.mse_loss(*feats["relu2_2"])
    assert both == pytest.approx(expected.item(), rel=1e-5)


def test_hr_pass_builds_no_graph_and_gradient_reaches_sr_only() -> None:
    loss = perceptual()
    passes: list[bool] = []
    loss.network.register_forward_hook(
        lambda _m, _i, out: passes.append(all(t.grad_fn is not None for t in out.values())))
    hr = images().requires_grad_(True)  # even a graph-carrying HR gets no graph through the net
    sr = blurred(images(seed=1)).requires_grad_(True)
    loss.train()  # a parent's train() must not unfreeze the network
    loss(sr, hr).backward()
    assert passes == [False, True]  # HR first, without graph; then SR, with one
    assert hr.grad is None
    assert sr.grad is not None and torch.isfinite(sr.grad).all() and sr.grad.abs().sum() > 0
    assert not loss.network.training
    for p in loss.network.parameters():
        assert not p.requires_grad and p.grad is None


def test_image_range_is_converted_before_the_network() -> None:
    hr01 = images()
    sr01 = blurred(hr01)
    loss = perceptual()
    loss.set_image_range(0, 1)
    expected = loss(sr01, hr01).item()
    loss.set_image_range(-1, 1)
    assert loss(sr01 * 2 - 1, hr01 * 2 - 1).item() == pytest.approx(expected, rel=1e-5)
    assert loss(sr01, hr01).item() != pytest.approx(expected, rel=1e-2)  # range matters


def test_auto_scale_must_be_calibrated_first() -> None:
    loss = perceptual(feature_scale="auto")
    with pytest.raises(RuntimeError, match="calibrate"):
        loss(images(), images())


def test_calibration_is_saved_in_the_state_dict_and_kept_once_set() -> None:
    hr = images()
    sr = blurred(hr)
    torch.manual_seed(0)
    loss = perceptual(feature_scale="auto", layers={"relu1_2": 1.0, "relu2_2": 1.0})
    scales = loss.calibrate(hr)
    assert set(scales) == {"relu1_2", "relu2_2"} and all(s > 0 for s in scales.values())
    feat = loss.network(loss.network.input_spec.convert(hr))["relu2_2"]
    assert scales["relu2_2"] == pytest.approx(1 / feat.square().mean().sqrt().item(), rel=1e-5)
    assert loss.calibrate(images(seed=5)) == scales  # already calibrated: kept
    assert loss.calibrate(images(seed=5), force=True) != scales

    torch.manual_seed(0)
    restored = perceptual(feature_scale="auto", layers={"relu1_2": 1.0, "relu2_2": 1.0})
    restored.load_state_dict(loss.state_dict())
    assert restored(sr, hr).item() == pytest.approx(loss(sr, hr).item(), rel=1e-6)


def test_l1_calibration_uses_mean_absolute_feature() -> None:
    hr = images()
    loss = perceptual(feature_scale="auto", criterion="l1")
    scale = loss.calibrate(hr)["relu2_2"]
    feat = loss.network(loss.network.input_spec.convert(hr))["relu2_2"]
    assert scale == pytest.approx(1 / feat.abs().mean().item(), rel=1e-5)


def set5_crops(root: Path, size: int = 64) -> torch.Tensor:
    crops = []
    for path in sorted((root / "benchmarks" / "Set5" / "HR").glob("*.png")):
        rgb = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32))
        h, w = rgb.shape[:2]
        top, left = (h - size) // 2, (w - size) // 2
        crops.append(rgb[top:top + size, left:left + size].permute(2, 0, 1) / 255)
    return torch.stack(crops)


@pytest.mark.slow
@pytest.mark.parametrize(("criterion", "raw_spread"), [("mse", 100), ("l1", 10)])
def test_auto_calibration_makes_taps_comparable(shared_data: Path, criterion: str,
                                                raw_spread: float) -> None:
    """The paper's VGG19 on Set5 crops vs their bicubic x4 down-up versions: raw losses at
    relu2_2 and relu5_4 differ a lot (measured 660x mse, 40x l1), calibrated ones by less than
    3x (measured 0.65 and 0.60)."""
    hr = set5_crops(shared_data)
    sr = blurred(hr)
    raw, calibrated = {}, {}
    power = {"mse": 2, "l1": 1}[criterion]
    for tap in ("relu2_2", "relu5_4"):
        loss = plfw.build("loss", {"name": "perceptual", "network": CAFFE_VGG,
                                   "layers": {tap: 1.0}, "criterion": criterion,
                                   "feature_scale": "auto"})
        scale = loss.calibrate(hr)[tap]
        calibrated[tap] = loss(sr, hr).item()
        raw[tap] = calibrated[tap] / scale**power  # exact: see test_feature_scale_scales_...
    raw_ratio = raw["relu2_2"] / raw["relu5_4"]
    cal_ratio = calibrated["relu2_2"] / calibrated["relu5_4"]
    assert raw_ratio > raw_spread
    assert 1 / 3 < cal_ratio < 3


def test_unknown_criterion_and_bad_scale_are_user_errors() -> None:
    with pytest.raises(UserError, match="criterion.*did you mean: l1"):
        perceptual(criterion="l2")
    with pytest.raises(UserError, match="feature_scale"):
        perceptual(feature_scale="big")
    with pytest.raises(UserError, match="feature_scale"):
        perceptual(feature_scale=-1.0)


def test_unknown_tap_surfaces_the_extractors_error() -> None:
    with pytest.raises(UserError, match="unknown tap 'relu9_9'"):
        perceptual(layers={"relu9_9": 1.0})


def test_taps_come_from_layers_not_the_network_spec() -> None:
    with pytest.raises(UserError, match="taps"):
        plfw.build("loss", {"name": "perceptual", "network": {**RANDOM_VGG, "taps": ["relu1_1"]}})


def test_layers_replace_the_default_tap() -> None:
    loss = perceptual(layers={"relu1_2": 1.0})
    assert loss.network.taps == ("relu1_2",)
    assert plfw.build("loss", {"name": "perceptual", "network": RANDOM_VGG}).network.taps == (
        "relu5_4",)

"""GAN-SR losses (plugins/plfw_builtins/losses/fidelity.py, frequency.py): each against its paper's
definition, worked out here independently in numpy on tiny tensors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REGISTRY

import plfw
from plfw import UserError


def pair(shape: tuple[int, ...] = (2, 3, 12, 12), seed: int = 0,
         noise: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """A [0, 1] HR batch and an SR batch near it (so structural losses are not saturated)."""
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(shape, generator=g)
    sr = (hr + noise * (torch.rand(shape, generator=g) - 0.5)).clamp(0, 1)
    return sr, hr


def grad_of(loss: torch.nn.Module, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    sr = sr.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(sr, hr), sr)
    return g


def check_range_and_gradient(loss: torch.nn.Module, sr: torch.Tensor, hr: torch.Tensor) -> float:
    """The loss on [0, 1] images equals the loss on the same images in [-1, 1]; its gradient
    reaches SR (finite, not all zero). Returns the [0, 1] value."""
    loss.set_image_range(0.0, 1.0)
    unit = float(loss(sr, hr))
    loss.set_image_range(-1.0, 1.0)
    signed = float(loss(sr * 2 - 1, hr * 2 - 1))
    loss.set_image_range(0.0, 1.0)
    assert signed == pytest.approx(unit, rel=1e-5, abs=1e-7)
    g = grad_of(loss, sr, hr)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    return unit


# --- Charbonnier -----------------------------------------------------------------------------


def test_charbonnier_is_laps_penalty() -> None:
    sr, hr = pair()
    loss = plfw.build("loss", "charbonnier")
    d = sr.double().numpy() - hr.double().numpy()
    expected = np.sqrt(d**2 + 1e-3**2).mean()
    assert check_range_and_gradient(loss, sr, hr) == pytest.approx(expected, rel=1e-6)
    # identical images: rho(0) = eps, the definition's floor; eps is a parameter
    assert float(loss(hr, hr)) == pytest.approx(1e-3, rel=1e-4)
    wide = plfw.build("loss", {"name": "charbonnier", "eps": 0.5})
    assert float(wide(sr, hr)) == pytest.approx(np.sqrt(d**2 + 0.25).mean(), rel=1e-6)
    with pytest.raises(UserError, match="eps"):
        plfw.build("loss", {"name": "charbonnier", "eps": 0})


# --- focal frequency loss --------------------------------------------------------------------


def dft_matrix(n: int) -> np.ndarray:
    k = np.arange(n)
    return np.exp(-2j * np.pi * np.outer(k, k) / n) / np.sqrt(n)


def ffl_reference(sr: np.ndarray, hr: np.ndarray, alpha: float = 1.0, patch: int = 1,
                  log_matrix: bool = False, batch_matrix: bool = False
                  ) -> tuple[float, np.ndarray]:
    """Jiang et al. eqs. 1-4 with the orthonormal DFT written as matrices: (loss, d loss / d sr
    with the weights held constant)."""
    n, c, h, w = sr.shape
    ph, pw = h // patch, w // patch
    a, b = dft_matrix(ph), dft_matrix(pw)

    def patches(x: np.ndarray) -> np.ndarray:  # (n, patch*patch, c, ph, pw)
        return np.stack([x[:, :, i * ph:(i + 1) * ph, j * pw:(j + 1) * pw]
                         for i in range(patch) for j in range(patch)], 1)

    diff = a @ (patches(sr) - patches(hr)) @ b.T
    dist = np.abs(diff) ** 2
    weight = np.sqrt(dist) ** alpha
    if log_matrix:
        weight = np.log(1 + weight)
    peak = weight.max() if batch_matrix else weight.max(axis=(-2, -1), keepdims=True)
    weight = np.nan_to_num(weight / peak)
    value = (weight * dist).mean()
    # d/dx of mean(w |A x B - A y B|^2), w constant: 2/K Re(A^H (w D) B^H), back to pixels
    grad_p = 2 / dist.size * np.real(a.conj().T @ (weight * diff) @ b.conj())
    grad = np.zeros_like(sr)
    for k in range(patch * patch):
        i, j = divmod(k, patch)
        grad[:, :, i * ph:(i + 1) * ph, j * pw:(j + 1) * pw] = grad_p[:, k]
    return value, grad


@pytest.mark.parametrize("options", [
    {}, {"alpha": 2.0}, {"log_matrix": True}, {"batch_matrix": True}, {"patch_factor": 2},
])
def test_focal_frequency_follows_the_paper(options: dict) -> None:
    sr, hr = pair((2, 3, 8, 12), seed=1)
    loss = plfw.build("loss", {"name": "focal_frequency", **options})
    value, grad = ffl_reference(sr.double().numpy(), hr.double().numpy(),
                                options.get("alpha", 1.0), options.get("patch_factor", 1),
                                options.get("log_matrix", False),
                                options.get("batch_matrix", False))
    assert check_range_and_gradient(loss, sr, hr) == pytest.approx(value, rel=1e-5)
    # the weight matrix is detached: the gradient is that of the weighted distance with the
    # weights held fixed
    np.testing.assert_allclose(grad_of(loss, sr, hr).double().numpy(), grad, rtol=1e-4,
                               atol=1e-9)
    assert float(loss(hr, hr)) == 0.0


def test_focal_frequency_with_alpha_zero_is_the_mse_and_ave_spectrum_compares_means() -> None:
    sr, hr = pair((2, 3, 8, 8), seed=2)
    flat = plfw.build("loss", {"name": "focal_frequency", "alpha": 0.0})
    assert float(flat(sr, hr)) == pytest.approx(float(((sr - hr) ** 2).mean()), rel=1e-5)
    ave = plfw.build("loss", {"name": "focal_frequency", "ave_spectrum": True})
    mean_sr, mean_hr = sr.mean(0, keepdim=True), hr.mean(0, keepdim=True)
    value, _ = ffl_reference(mean_sr.double().numpy(), mean_hr.double().numpy())
    assert float(ave(sr, hr)) == pytest.approx(value, rel=1e-5)
    with pytest.raises(UserError, match="patch_factor"):
        plfw.build("loss", {"name": "focal_frequency", "patch_factor": 3})(sr, hr)


# --- FDL -------------------------------------------------------------------------------------


def swd_reference(x: np.ndarray, y: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Sliced W1 of the k x k patches (stride 1) of each image: (n,)."""
    n, c, h, w = x.shape
    k = directions.shape[-1]
    flat = directions.reshape(len(directions), -1)

    def projected(z: np.ndarray) -> np.ndarray:  # (n, positions, directions), sorted
        cols = [z[:, :, i:i + k, j:j + k].reshape(n, -1)
                for i in range(h - k + 1) for j in range(w - k + 1)]
        return np.sort(np.stack(cols, 1) @ flat.T, axis=1)

    return np.abs(projected(x) - projected(y)).mean(axis=(1, 2))


def test_fdl_is_the_sliced_wasserstein_distance_of_feature_spectra() -> None:
    # odd sides: no Nyquist bin, whose phase would flip between +pi and -pi on a signed zero
    sr, hr = pair((2, 3, 11, 13), seed=3)
    layers = {"relu1_1": 1.0, "relu1_2": 0.5}
    loss = plfw.build("loss", {"name": "fdl", "network": {"name": "vgg19", "weights": "none"},
                               "layers": layers, "patch": 3, "projections": 8,
                               "phase_weight": 0.7})
    value = check_range_and_gradient(loss, sr, hr)
    net = loss.network
    with torch.no_grad():
        fs, fh = (net(net.input_spec.convert(x)) for x in (sr, hr))
    expected = np.zeros(2)
    for tap, weight in layers.items():
        directions = loss.fixed[tap].double().numpy()
        assert directions.shape == (8, 64, 3, 3)
        np.testing.assert_allclose(np.linalg.norm(directions.reshape(8, -1), axis=1), 1,
                                   rtol=1e-6)
        a, b = np.fft.fft2(fs[tap].double().numpy()), np.fft.fft2(fh[tap].double().numpy())
        expected += weight * (swd_reference(np.abs(a), np.abs(b), directions)
                              + 0.7 * swd_reference(np.angle(a), np.angle(b), directions))
    assert value == pytest.approx(expected.mean(), rel=1e-4)
    assert float(loss(hr, hr)) == 0.0
    # fixed directions: the same value every call; resample: new ones from the run's RNG
    assert float(loss(sr, hr)) == value
    fresh = plfw.build("loss", {"name": "fdl", "network": {"name": "vgg19", "weights": "none"},
                                "layers": {"relu1_1": 1.0}, "patch": 3, "projections": 8,
                                "resample": True})
    torch.manual_seed(5)
    first = float(fresh(sr, hr))
    torch.manual_seed(5)
    assert float(fresh(sr, hr)) == first and float(fresh(sr, hr)) != first


def test_fdl_is_unmoved_by_a_circular_shift_of_the_features() -> None:
    """The amplitude spectrum ignores where a pattern sits: with a network that is the identity
    (a 1x1 tap), a circularly shifted SR has zero amplitude distance, unlike the pixel MSE."""
    loss = plfw.build("loss", {"name": "fdl", "network": {"name": "vgg19", "weights": "none"},
                               "layers": {"conv1_1": 1.0}, "patch": 1, "projections": 4,
                               "phase_weight": 0.0})
    net = loss.network
    hr = pair((1, 3, 10, 10), seed=4)[1]
    with torch.no_grad():  # make conv1_1 the identity on the ImageNet-normalised input
        conv = net.layers[0]
        conv.weight.zero_()
        conv.bias.zero_()
        for ch in range(3):
            conv.weight[ch, ch, 1, 1] = 1.0
    shifted = hr.roll(shifts=(3, 4), dims=(-2, -1))
    assert float(loss(shifted, hr)) < 1e-5 < float(((shifted - hr) ** 2).mean())


def test_fdl_takes_vit_tokens_and_refuses_a_patch_larger_than_the_tap() -> None:
    pytest.importorskip("timm")
    sr, hr = pair((1, 3, 28, 42), seed=5)
    loss = plfw.build("loss", {
        "name": "fdl", "layers": {"blocks.0": 1.0}, "patch": 2, "projections": 4,
        "network": {"name": "timm:vit_small_patch14_reg4_dinov2", "weights": "none",
                    "model_kwargs": {"dynamic_img_size": True, "depth": 1}}})
    check_range_and_gradient(loss, sr, hr)
    tokens = loss.network(loss.network.input_spec.convert(sr))["blocks.0"]
    assert tokens.shape[1] == 5 + 2 * 3  # class + 4 registers + a 2x3 grid of 14-px patches
    small = plfw.build("loss", {"name": "fdl", "network": {"name": "vgg19", "weights": "none"},
                                "layers": {"relu2_1": 1.0}, "patch": 5, "projections": 2})
    with pytest.raises(UserError, match="smaller than patch 5"):
        small(*pair((1, 3, 8, 8)))


# --- MS-SSIM ---------------------------------------------------------------------------------


def test_ms_ssim_is_one_minus_piqs_ms_ssim() -> None:
    piq = pytest.importorskip("piq")
    sr, hr = pair((2, 3, 48, 48), seed=6, noise=0.3)
    weights = [0.0448, 0.2856, 0.3001]  # three scales need 41 px
    loss = plfw.build("loss", {"name": "ms_ssim", "scale_weights": weights})
    expected = 1 - float(piq.multi_scale_ssim(sr, hr, data_range=1.0,
                                              scale_weights=torch.tensor(weights)))
    assert 0.01 < expected < 0.5
    assert check_range_and_gradient(loss, sr, hr) == pytest.approx(expected, rel=1e-5)
    assert float(loss(hr, hr)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(UserError, match=r"too small for 3 scales \(needs 41 px\); give at most "
                                        r"2 scale_weights") as err:
        loss(*pair((1, 3, 32, 32)))
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="161 px"):
        plfw.build("loss", "ms_ssim")(*pair((1, 3, 96, 96)))


# --- DISTS -----------------------------------------------------------------------------------


def dists_weights() -> tuple[np.ndarray, np.ndarray]:
    spec = importlib.util.find_spec("DISTS_pytorch")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("DISTS_pytorch is not installed")
    raw = torch.load(Path(spec.submodule_search_locations[0]) / "weights.pt",
                     weights_only=True)
    return raw["alpha"].double().flatten().numpy(), raw["beta"].double().flatten().numpy()


def test_dists_loss_is_the_dists_distance_with_gradients() -> None:
    alpha, beta = dists_weights()
    # 8-bit values, so the metric (which rounds to 8 bits) sees the same images as the loss
    sr, hr = (torch.round(t * 255) / 255 for t in pair((2, 3, 32, 32), seed=7))
    loss = plfw.build("loss", {"name": "dists", "weights": "none"})
    value = check_range_and_gradient(loss, sr, hr)
    # Ding et al. eqs. 8-10 written out: per stage (the image, then five VGG16 stages) and
    # channel, luminance-like S1 of the means and structure-like S2 of the (co)variances
    trunk = loss.trunk
    per_image = []
    for i in range(2):
        with torch.no_grad():
            stages = [(sr[i:i + 1], hr[i:i + 1])]
            fx = dict(trunk.iter_taps(trunk.input_spec.convert(sr[i:i + 1])))
            fy = dict(trunk.iter_taps(trunk.input_spec.convert(hr[i:i + 1])))
            stages += [(fx[t], fy[t]) for t in trunk.taps]
        s1s, s2s = [], []
        for x, y in stages:
            x, y = x[0].flatten(1).double().numpy(), y[0].flatten(1).double().numpy()
            mx, my = x.mean(1), y.mean(1)
            vx, vy = x.var(1), y.var(1)
            cov = ((x - mx[:, None]) * (y - my[:, None])).mean(1)
            s1s.append((2 * mx * my + 1e-6) / (mx**2 + my**2 + 1e-6))
            s2s.append((2 * cov + 1e-6) / (vx + vy + 1e-6))
        total = alpha.sum() + beta.sum()
        per_image.append(1 - (alpha @ np.concatenate(s1s) + beta @ np.concatenate(s2s)) / total)
    # float32 against float64: 1 - similarity cancels about 7 digits' worth
    assert value == pytest.approx(np.mean(per_image), rel=1e-4, abs=2e-7)
    metric = plfw.build("metric", {"name": "dists", "weights": "none", "tile": 0})
    metric.trunk.load_state_dict(trunk.state_dict())  # the same random trunk
    assert np.mean([metric(sr[i], hr[i]) for i in range(2)]) == pytest.approx(value, rel=1e-4,
                                                                             abs=2e-7)
    assert float(loss(hr, hr)) == pytest.approx(0.0, abs=1e-6)


def test_losses_stay_float32_under_bf16_autocast() -> None:
    """The trainer's bf16 steps run losses under autocast: the values come back float32, and
    the parts that must not be rounded (SSIM windows, sorted projections) are not."""
    sr, hr = pair((2, 3, 24, 24), seed=8)
    specs = ["charbonnier", "focal_frequency",
             {"name": "ms_ssim", "scale_weights": [0.0448, 0.2856]},
             {"name": "fdl", "network": {"name": "vgg19", "weights": "none"},
              "layers": {"conv1_1": 1.0}, "patch": 3, "projections": 8}]
    for spec in specs:
        loss = plfw.build("loss", spec)
        full = loss(sr, hr)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = loss(sr, hr)
        assert low.dtype == torch.float32
        # conv1_1 itself runs in bf16 under autocast (as the perceptual loss's network does)
        tolerance = 2e-2 if isinstance(spec, dict) and spec["name"] == "fdl" else 1e-6
        assert float(low) == pytest.approx(float(full), rel=tolerance), spec


def test_the_losses_are_registered_with_their_papers() -> None:
    registry = REGISTRY
    for name, paper in (("charbonnier", "2017"), ("focal_frequency", "2021"), ("fdl", "2024"),
                        ("ms_ssim", "2003"), ("dists", "2020")):
        assert paper in registry.get("loss", name).description, name

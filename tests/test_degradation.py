"""The ``degraded_folder`` dataset: Real-ESRGAN's second-order degradation, drawn per item from
the seeded RNG (so batches replay exactly on resume), its kernels against their closed forms,
its noise and JPEG steps, and one-line errors for bad parameters."""

from __future__ import annotations

import math
import random

import pytest
import torch
from helpers import REGISTRY, make_images
from plfw_builtins.datasets import degradation as dg

from plfw.core.errors import UserError
from plfw.training.sampling import step_loader


def dataset(tmp_path, **params):
    root = make_images(tmp_path / "hr", 3, (80, 72))
    spec = {"name": "degraded_folder", "root": str(root), "crop": 64, "scale": 4, **params}
    return REGISTRY.build("dataset", spec, "test")


def test_items_have_the_right_shapes_and_depend_only_on_the_item_seed(tmp_path) -> None:
    ds = dataset(tmp_path)
    draws = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        random.seed(seed)
        draws.append(ds[1])
    (lr, hr), (lr2, hr2), (lr3, _) = draws
    assert hr.shape == (3, 64, 64) and lr.shape == (3, 16, 16)
    assert torch.equal(lr, lr2) and torch.equal(hr, hr2) and not torch.equal(lr, lr3)
    assert torch.equal((lr * 255).round(), lr * 255)  # 8-bit levels, like a saved LR image


def test_batches_replay_exactly_when_a_run_resumes(tmp_path) -> None:
    ds = dataset(tmp_path)
    straight = step_loader(ds, 2, seed=7, start=0)
    batches = [next(straight) for _ in range(3)]
    resumed = next(step_loader(ds, 2, seed=7, start=2))
    assert torch.equal(resumed[0], batches[2][0]) and torch.equal(resumed[1], batches[2][1])


def test_kernels_match_their_closed_forms() -> None:
    size, sigma = 21, 2.0
    k = dg.shaped_kernel("iso", size, sigma, sigma, 0.0)
    r = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(r[:, None] ** 2 + r[None] ** 2) / (2 * sigma**2))
    torch.testing.assert_close(k, (g / g.sum()).float())
    aniso = dg.shaped_kernel("aniso", size, 3.0, 1.0, math.pi / 2)  # rotated: tall, not wide
    assert aniso[:, size // 2].sum() > aniso[size // 2, :].sum()
    assert float(dg.shaped_kernel("plateau_iso", size, 2.0, 2.0, 0.0, 2.0).sum()) == (
        pytest.approx(1.0))
    flat = dg.shaped_kernel("generalized_iso", size, 2.0, 2.0, 0.0, 4.0)
    assert flat[size // 2, size // 2 + 1] / flat[size // 2, size // 2] > 0.99  # a flat top
    sinc = dg.sinc_kernel(math.pi, 21)  # cut-off at Nyquist: almost no blur
    assert float(sinc.sum()) == pytest.approx(1.0) and sinc[10, 10] > 0.7


def test_noise_and_jpeg_steps_do_what_they_say() -> None:
    torch.manual_seed(0)
    img = torch.full((3, 64, 64), 0.5)
    noisy = dg.add_noise(img, 1.0, [10.0, 10.0], [1.0, 1.0], 0.0)
    assert float((noisy - img).std()) == pytest.approx(10 / 255, rel=0.05)
    gray = dg.add_noise(img, 1.0, [10.0, 10.0], [1.0, 1.0], 1.0)
    assert torch.equal(gray[0], gray[1])  # the same noise in every channel
    torch.manual_seed(0)
    photo = torch.rand(3, 8, 8).repeat_interleave(8, 1).repeat_interleave(8, 2)
    assert float((dg.jpeg(photo, 95) - photo).abs().mean()) < float(
        (dg.jpeg(photo, 10) - photo).abs().mean())


@pytest.mark.parametrize(("params", "message"), [
    ({"crop": 8}, "crop must be at least"),
    ({"kernel_range": [6, 21]}, "two odd sizes"),
    ({"kernel_probs": [1.0, 0.0]}, "kernel_probs must be 6"),
    ({"noise_range": [30.0, 1.0]}, "noise_range must be"),
])
def test_bad_parameters_are_one_line_errors(tmp_path, params, message) -> None:
    with pytest.raises(UserError, match=message):
        dataset(tmp_path, **params)

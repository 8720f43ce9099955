"""Gradient matching: after calibration, different content losses pull equally hard."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import REGISTRY

import plfw
from plfw.core.errors import UserError
from plfw.imaging.images import load_gray_or_rgb
from plfw.training.calibration import GradientMatched, calibration_sr, reference_spec
from tests.conftest import REPO


def photo_batch(size: int = 64) -> torch.Tensor:
    """Centre crops of two shipped photos, in [-1, 1] (the paper's generator range)."""
    crops = []
    for name in ("camera", "chelsea"):
        img = load_gray_or_rgb(REPO / "assets" / "photos" / "val" / f"{name}.png")
        img = img.expand(3, -1, -1)
        h, w = img.shape[-2:]
        top, left = (h - size) // 2, (w - size) // 2
        crops.append(img[:, top:top + size, left:left + size])
    return torch.stack(crops) * 2 - 1


def grad_norm(loss: torch.nn.Module, sr: torch.Tensor, hr: torch.Tensor) -> float:
    x = sr.clone().requires_grad_(True)
    loss(x, hr).backward()
    return float(x.grad.norm())


def matched(spec: dict) -> GradientMatched:
    loss = GradientMatched(plfw.build("loss", spec), reference_spec("vgg54", "test", REGISTRY), 4,
                           "test",
                           REGISTRY)
    loss.set_image_range(-1.0, 1.0)
    return loss


def test_two_networks_feel_alike_after_matching() -> None:
    hr = photo_batch()
    sr0 = calibration_sr(hr, 4)
    # the registered vgg54 is the paper's content loss, spelled out here
    reference = plfw.build("loss", {"name": "perceptual", "network": {"name": "vgg19",
                                    "weights": "caffe"}, "layers": {"relu5_4": 1.0},
                                    "feature_scale": 1 / 12.75})
    reference.set_image_range(-1.0, 1.0)
    target = grad_norm(reference, sr0, hr)
    registered = plfw.build("loss", "vgg54")
    registered.set_image_range(-1.0, 1.0)
    assert grad_norm(registered, sr0, hr) == pytest.approx(target, rel=1e-6)
    specs = [
        {"name": "perceptual", "network": {"name": "vgg19", "weights": "none"},
         "layers": {"relu2_2": 1.0}, "feature_scale": "auto"},
        {"name": "perceptual", "network": {"name": "efficientnet_lite0", "weights": "pretrained"},
         "layers": {"3": 1.0}, "feature_scale": 1.0},
        {"name": "mse"},
    ]
    raw, after = [], []
    for spec in specs:
        loss = matched(spec)
        with torch.no_grad():
            info = loss.calibrate(hr)
        raw.append(grad_norm(loss.loss, sr0, hr))
        after.append(grad_norm(loss, sr0, hr))
        assert info["factor"] == pytest.approx(target / raw[-1], rel=1e-4)
    # before: the raw pulls differ by orders of magnitude; after: within 5 % of the reference
    assert max(raw) / min(raw) > 10
    for value in after:
        assert value == pytest.approx(target, rel=0.05)


def test_factor_survives_a_state_dict_round_trip_and_is_not_recomputed() -> None:
    hr = photo_batch(32)
    loss = matched({"name": "mse"})
    loss.calibrate(hr)
    state = loss.state_dict()
    fresh = matched({"name": "mse"})
    fresh.load_state_dict(state)
    assert fresh.calibrated and float(fresh.factor) == float(loss.factor)
    # a calibrated loss keeps its factor on other images unless forced
    other = hr.flip(-1) * 0.5
    assert fresh.calibrate(other)["factor"] == float(loss.factor)
    assert fresh.calibrate(other, force=True)["factor"] != float(loss.factor)


def test_uncalibrated_use_and_bad_references_are_clear() -> None:
    loss = matched({"name": "mse"})
    with pytest.raises(RuntimeError, match="calibrate"):
        loss(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(UserError, match="did you mean: vgg54"):
        reference_spec("vgg45", "phases.srgan.losses.content", REGISTRY)
    with pytest.raises(UserError, match="non-zero"):
        flat = torch.zeros(1, 3, 32, 32)
        matched({"name": "mse"}).calibrate(flat)  # bicubic of a flat image is exact: no gradient
    assert reference_spec(True, "x", REGISTRY) == {"name": "vgg54"}  # plfw 0.2's shorthand
    with pytest.raises(UserError, match="expected a loss name"):
        reference_spec(3, "x", REGISTRY)


def test_trainer_logs_the_calibration(tmp_path) -> None:
    from plfw.core.config import load_config
    from plfw.trainer import Trainer

    cfg = load_config(REPO / "configs" / "quickstart.yaml", [
        f"run_dir={tmp_path / 'run'}", "phases.srresnet.steps=2", "phases.srgan=null",
        "phases.srresnet.losses.pixel.match_gradient=vgg54", "data.val=null",
        "data.batch_size=2", "data.workers=0", "train.device=cpu", "train.log_every=1"])
    Trainer(cfg, REGISTRY, progress=False).fit()
    import json

    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
            .splitlines()]
    calib = [r["calibration"] for r in rows if "calibration" in r]
    assert len(calib) == 1 and calib[0]["pixel"]["factor"] > 0
    assert all(math.isfinite(r["loss"]) for r in rows if "loss" in r)

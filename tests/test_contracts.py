"""The plugin contract (plfw/core/hookspecs.py), checked on every registered component.

Components are collected when this file is imported, so a newly registered one is tested without
editing this file, unless it cannot be built from its defaults: then EXAMPLES must give the
parameters it needs (its test fails until it does). Every dataset needs an entry, since a
dataset always reads files. Components with a ``weights`` parameter are built with
``weights: none``, so nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
import torch
from helpers import REGISTRY
from omegaconf import MISSING
from PIL import Image
from torch import nn

import plfw
from plfw.core.plugins import load_plugins
from plfw.nn.features import InputSpec, is_frozen

# Parameters for components that cannot be built from defaults alone, keyed by (kind, name).
# In datasets, "{hr}" and "{lr}" stand for folders of generated PNGs (x4 pairs by file stem).
EXAMPLES: dict[tuple[str, str], dict[str, Any]] = {
    ("feature_extractor", "timm"): {"model": "test_efficientnet"},
    ("dataset", "hr_folder"): {"root": "{hr}", "crop": 16},
    ("dataset", "paired_folders"): {"hr_root": "{hr}", "lr_root": "{lr}", "crop": 16},
    ("dataset", "degraded_folder"): {"root": "{hr}", "crop": 16},
    ("generator", "spandrel"): {"arch": "Compact", "options": {"num_feat": 8, "num_conv": 2}},
    # 32-px test images: two MS-SSIM scales (21 px), FDL patches that fit relu5_4's 2x2
    ("loss", "ms_ssim"): {"scale_weights": [0.0448, 0.2856]},
    ("loss", "fdl"): {"patch": 2, "projections": 16},
}

SCALE_OF_PNGS = 4
LR_SIDE = 12


def names(kind: str) -> list[str]:
    return REGISTRY.names(kind)


def param_fields(kind: str, name: str) -> dict[str, dataclasses.Field]:
    params = REGISTRY.get(kind, name).params
    return {f.name: f for f in dataclasses.fields(params)} if params else {}


def spec_for(kind: str, name: str, **replace: str) -> dict[str, Any]:
    """``{name, **params}`` from EXAMPLES plus ``weights: none`` where the component has it."""
    fields = param_fields(kind, name)
    spec: dict[str, Any] = {"name": name}
    if "weights" in fields:
        spec["weights"] = "none"
    example = EXAMPLES.get((kind, name))
    if example is not None:
        spec.update({k: v.format(**replace) if replace and isinstance(v, str) else v
                     for k, v in example.items()})
    missing = [n for n, f in fields.items() if f.default is MISSING and n not in spec]
    if missing or (kind == "dataset" and example is None):
        pytest.fail(f"{kind} '{name}' cannot be built from defaults (needs "
                    f"{', '.join(missing) or 'files'}): add an entry to EXAMPLES in "
                    f"tests/test_contracts.py")
    return spec


def build(kind: str, name: str, **replace: str) -> Any:
    return plfw.build(kind, spec_for(kind, name, **replace))


def photo(n: int, side: int, seed: int = 0) -> torch.Tensor:
    """Smooth gradients plus noise, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, side), torch.linspace(0, 1, side), indexing="ij")
    base = torch.stack([0.5 + 0.4 * torch.sin(6 * x + 2 * y), 0.5 + 0.4 * torch.cos(5 * y), x * y])
    return (base + 0.05 * torch.randn(n, 3, side, side, generator=g)).clamp(0, 1)


def test_every_plugin_loads() -> None:
    failed = load_plugins().failed
    assert failed == [], "\n".join(f"{f.name} ({f.distribution}): {f.error}" for f in failed)


@pytest.mark.parametrize("kind", ["generator", "feature_extractor", "loss", "dataset", "metric"])
def test_kind_has_components(kind: str) -> None:
    assert names(kind), f"no {kind} registered"


# --- generators -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", names("generator"))
def test_generator_scales_lr_into_its_output_range(name: str) -> None:
    g = build("generator", name)
    assert isinstance(g.scale, int) and g.scale >= 1
    lo, hi = g.output_range
    assert isinstance(lo, float) and isinstance(hi, float) and lo < hi
    g.eval()
    with torch.no_grad():
        sr = g(photo(1, LR_SIDE))
    assert sr.shape == (1, 3, LR_SIDE * g.scale, LR_SIDE * g.scale)
    assert torch.isfinite(sr).all()


# --- discriminators ---------------------------------------------------------------------------

def default_input_size(d: nn.Module, name: str) -> int:
    for field_name, f in param_fields("discriminator", name).items():
        if field_name in ("input_size", "image_size", "size", "crop") and f.default is not None:
            return int(f.default)
    return int(getattr(d, "input_size", 96))


@pytest.mark.parametrize("name", names("discriminator"))
def test_discriminator_returns_one_logit_per_image(name: str) -> None:
    """One logit per image, (N,) or (N, 1), or a map of them, (N, 1, h, w) (per pixel or
    patch: the adversarial losses average over every logit)."""
    d = build("discriminator", name)
    side = default_input_size(d, name)
    x = photo(2, side) * 2 - 1  # the paper's generator output range
    for train in (True, False):
        d.train(train)
        out = d(x)
        assert out.shape in ((2,), (2, 1)) or (out.dim() == 4 and out.shape[:2] == (2, 1)), (
            f"expected (N,) or (N, 1) logits or an (N, 1, h, w) map, got {out.shape}")
        assert torch.isfinite(out).all()


# --- feature extractors -----------------------------------------------------------------------

@pytest.mark.parametrize("name", names("feature_extractor"))
def test_feature_extractor_returns_its_taps_frozen(name: str) -> None:
    net = build("feature_extractor", name)
    assert isinstance(net.taps, tuple) and net.taps
    assert isinstance(net.input_spec, InputSpec)
    assert is_frozen(net), "call plfw.nn.features.freeze on the extractor"
    assert not any(p.requires_grad for p in net.parameters())
    parent = nn.ModuleList([net])
    parent.train()
    assert not any(m.training for m in net.modules()), "a parent's train() unfroze it"

    x = net.input_spec.convert(photo(2, 32)).requires_grad_(True)
    out = net(x)
    assert set(out) == set(net.taps)
    for tap, feat in out.items():
        assert feat.shape[0] == 2 and torch.isfinite(feat).all(), tap
    sum(f.float().mean() for f in out.values()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


# --- losses -----------------------------------------------------------------------------------

def loss_spec(name: str) -> dict[str, Any]:
    """A loss's spec; a loss-network parameter ``network`` gets ``weights: none`` too."""
    spec = spec_for("loss", name)
    fields = param_fields("loss", name)
    if "network" in fields and "network" not in spec:
        default = fields["network"].default
        if isinstance(default, str) and default in names("feature_extractor"):
            spec["network"] = spec_for("feature_extractor", default)
    return spec


@pytest.mark.parametrize("name", names("loss"))
def test_loss_contract(name: str) -> None:
    loss = plfw.build("loss", loss_spec(name))
    if getattr(loss, "adversarial", False):
        check_adversarial(loss)
    else:
        check_image_loss(loss)


def check_image_loss(loss: nn.Module) -> None:
    """A finite scalar, with a gradient to SR and none to any frozen network."""
    hr = photo(2, 32) * 2 - 1
    if hasattr(loss, "set_image_range"):
        loss.set_image_range(-1.0, 1.0)
    if hasattr(loss, "calibrate"):
        loss.calibrate(hr)
    loss.train()  # as inside a training loop
    sr = (photo(2, 32, seed=1) * 2 - 1).requires_grad_(True)
    if getattr(loss, "needs_ema", False):  # compares with the EMA generator's output (LDL)
        value = loss(sr, hr, ema_sr=(photo(2, 32, seed=2) * 2 - 1))
    else:
        value = loss(sr, hr)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert sr.grad is not None and torch.isfinite(sr.grad).all() and sr.grad.abs().sum() > 0
    for module in loss.modules():
        if is_frozen(module):
            assert not module.training
            assert all(p.grad is None and not p.requires_grad for p in module.parameters())


def check_adversarial(loss: nn.Module) -> None:
    """Finite scalars from both objectives, each with a gradient to the fake logits."""
    real = torch.tensor([1.5, -0.5, 0.2, 3.0])
    fake = torch.tensor([-2.0, 0.1, 0.7, -0.3], requires_grad=True)
    for value in (loss.generator_loss(real, fake), loss.discriminator_loss(real, fake)):
        assert value.dim() == 0 and torch.isfinite(value)
        (grad,) = torch.autograd.grad(value, fake)
        assert grad.abs().sum() > 0


# --- metrics ----------------------------------------------------------------------------------

# Metrics that need larger images than the 32-pixel default (NIQE: whole 96x96 patches), and
# no-reference metrics, which score ``sr`` alone: for them "prefers the truth" is meaningless and
# the contract is that ``hr`` does not change the score.
METRIC_SIDE = {"niqe": 2 * 96 + 8}
NO_REFERENCE = {"niqe"}


@pytest.mark.parametrize("name", names("metric"))
def test_metric_returns_a_float_and_prefers_the_truth(name: str) -> None:
    metric = build("metric", name)
    assert isinstance(metric.higher_is_better, bool)
    side = METRIC_SIDE.get(name, 32)
    hr = photo(1, side)[0]
    sr = photo(1, side, seed=1)[0]
    score, perfect = metric(sr, hr), metric(hr, hr)
    assert isinstance(score, float) and math.isfinite(score)
    assert isinstance(perfect, float)
    if name in NO_REFERENCE:
        assert metric(sr, sr) == score
    else:
        assert perfect >= score if metric.higher_is_better else perfect <= score


# --- datasets ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def png_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Three x4 HR/LR pairs of small RGB PNGs, plus one grayscale pair."""
    root = tmp_path_factory.mktemp("pngs")
    hr_dir, lr_dir = root / "HR", root / "LR"
    hr_dir.mkdir()
    lr_dir.mkdir()
    side = LR_SIDE * SCALE_OF_PNGS
    for i in range(4):
        hr = (photo(1, side, seed=i)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        img = Image.fromarray(hr)
        if i == 3:
            img = img.convert("L")
        img.save(hr_dir / f"img{i}.png")
        img.resize((LR_SIDE, LR_SIDE), Image.Resampling.BICUBIC).save(lr_dir / f"img{i}.png")
    return {"hr": str(hr_dir), "lr": str(lr_dir)}


@pytest.mark.parametrize("name", names("dataset"))
def test_dataset_yields_rgb_pairs_at_its_scale(name: str, png_folders: dict[str, str]) -> None:
    spec = spec_for("dataset", name, **png_folders)
    data = plfw.build("dataset", spec)
    scale = int(getattr(data, "scale", spec.get("scale", SCALE_OF_PNGS)))
    assert len(data) > 0
    for index in (0, len(data) - 1):
        lr, hr = data[index]
        for img in (lr, hr):
            assert isinstance(img, torch.Tensor) and img.dtype == torch.float32
            assert img.dim() == 3 and img.shape[0] == 3
            assert 0 <= img.min() and img.max() <= 1
        assert hr.shape[1:] == (lr.shape[1] * scale, lr.shape[2] * scale)


def test_examples_name_registered_components() -> None:
    """A stale EXAMPLES entry (a renamed component) would silently test nothing."""
    stale = [key for key in EXAMPLES if key[1] not in names(key[0])]
    assert not stale, f"EXAMPLES entries for unregistered components: {stale}"

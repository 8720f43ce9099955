"""U-Net (Real-ESRGAN) and PatchGAN (pix2pix) discriminators
(plugins/plfw_builtins/discriminators/unet_patchgan.py): every adversarial mode on their logit maps,
spectral norm, receptive field, sizes, and a short training run through ``plfw train``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import tiny_config

import plfw
from plfw import UserError

MODES = ("vanilla", "lsgan", "hinge", "relativistic")
DISCRIMINATORS = {
    "unet": {"name": "unet", "channels": 8},
    "unet_no_skip": {"name": "unet", "channels": 8, "skip_connection": False},
    "patchgan_batch": {"name": "patchgan", "channels": 8},
    "patchgan_instance": {"name": "patchgan", "channels": 8, "norm": "instance"},
    "patchgan_sn": {"name": "patchgan", "channels": 8, "norm": "none", "spectral_norm": True},
}


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0, x)


def expected_losses(mode: str, real: np.ndarray, fake: np.ndarray) -> tuple[float, float]:
    """(D loss, G loss) with every logit of the map a sample, written out per mode."""
    if mode == "vanilla":  # BCE: -log sigmoid(r) - log(1 - sigmoid(f)); G: -log sigmoid(f)
        return softplus(-real).mean() + softplus(fake).mean(), softplus(-fake).mean()
    if mode == "lsgan":
        return ((real - 1) ** 2).mean() + (fake**2).mean(), ((fake - 1) ** 2).mean()
    if mode == "hinge":
        return (np.maximum(0, 1 - real).mean() + np.maximum(0, 1 + fake).mean(),
                -fake.mean())
    # relativistic average: against the mean logit of the other kind, over batch and positions
    d = softplus(-(real - fake.mean())).mean() + softplus(fake - real.mean()).mean()
    g = softplus(real - fake.mean()).mean() + softplus(-(fake - real.mean())).mean()
    return d, g


@pytest.mark.parametrize("key", DISCRIMINATORS)
def test_every_adversarial_mode_trains_on_the_logit_map(key: str) -> None:
    torch.manual_seed(0)
    spec = DISCRIMINATORS[key]
    D = plfw.build("discriminator", spec).train()
    real, fake = torch.rand(2, 3, 32, 48), torch.rand(2, 3, 32, 48)
    shape = (2, 1, 32, 48) if spec["name"] == "unet" else (2, 1, 32 // 8 - 2, 48 // 8 - 2)
    for mode in MODES:
        adv = plfw.build("loss", {"name": "adversarial", "mode": mode})
        D.zero_grad()
        r, f = D(real), D(fake)
        assert r.shape == shape and f.shape == shape
        d_loss = adv.discriminator_loss(r, f)
        want_d, want_g = expected_losses(mode, r.detach().double().numpy(),
                                         f.detach().double().numpy())
        assert float(d_loss.detach()) == pytest.approx(want_d, rel=1e-5)
        assert float(adv.generator_loss(r, f).detach()) == pytest.approx(want_g, rel=1e-5)
        d_loss.backward()
        grads = [p.grad for p in D.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
        x = fake.clone().requires_grad_(True)
        g_loss = adv.generator_loss(D(real).detach(), D(x))
        (gx,) = torch.autograd.grad(g_loss, x)
        assert torch.isfinite(gx).all() and gx.abs().sum() > 0, mode


def test_unet_has_spectral_norm_and_per_pixel_output() -> None:
    torch.manual_seed(1)
    D = plfw.build("discriminator", {"name": "unet", "channels": 8}).train()
    normalised = [m for m in D.modules()
                  if isinstance(m, torch.nn.Conv2d) and hasattr(m, "parametrizations")]
    assert len(normalised) == 8  # all but the first and the last conv
    # its power-iteration vectors are buffers: checkpoints keep them, skipped steps restore them
    assert sum(k.endswith(("._u", "._v")) for k in D.state_dict()) == 16
    x = torch.rand(1, 3, 24, 16)
    for _ in range(30):  # power iterations converge to the top singular value
        out = D(x)
    assert out.shape == (1, 1, 24, 16)
    for conv in normalised:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert float(sigma) == pytest.approx(1.0, abs=0.02)
    # the skip connections matter: the same weights without them give another map
    plain = plfw.build("discriminator", {"name": "unet", "channels": 8, "skip_connection": False})
    plain.load_state_dict(D.state_dict())
    D.eval(), plain.eval()
    assert not torch.allclose(plain(x), D(x))
    # the trainer's input_size (the HR crop) is checked when the phase is built
    with pytest.raises(UserError, match="multiple of 8"):
        plfw.build("discriminator", {"name": "unet", "input_size": 20})
    with pytest.raises(UserError, match="multiples of 8"):
        D(torch.rand(1, 3, 20, 16))


@pytest.mark.parametrize(("layers", "field"), [(1, 16), (2, 34), (3, 70)])
def test_patchgan_receptive_field_is_70_for_three_layers(layers: int, field: int) -> None:
    """The patch one logit sees, measured: the input pixels its gradient reaches."""
    torch.manual_seed(2)
    D = plfw.build("discriminator", {"name": "patchgan", "channels": 4, "layers": layers,
                                     "norm": "none"})
    assert D.receptive_field == field
    x = torch.rand(1, 3, 160, 160, requires_grad=True)
    out = D(x)
    assert out.shape[-1] == 160 // 2**layers - 2
    centre = out.shape[-1] // 2
    (g,) = torch.autograd.grad(out[0, 0, centre, centre], x)
    rows = (g.abs().sum((0, 1, 3)) > 0).nonzero().flatten()
    assert int(rows.max() - rows.min() + 1) == field
    with pytest.raises(UserError, match="input_size"):
        plfw.build("discriminator", {"name": "patchgan", "layers": layers,
                                     "input_size": 2**layers * 3})


def test_plfw_train_with_the_unet_charbonnier_and_focal_frequency(tmp_path: Path) -> None:
    from plfw.cli import main

    path = tiny_config(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg["phases"]["srresnet"]["steps"] = 1
    cfg["phases"]["srgan"] = {
        "steps": 2, "lr": 1e-4, "discriminator": {"name": "unet", "channels": 8},
        "losses": {"pixel": {"name": "charbonnier", "weight": 1.0},
                   "frequency": {"name": "focal_frequency", "weight": 1.0},
                   "adversarial": {"name": "adversarial", "mode": "relativistic",
                                   "weight": 1e-3}}}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert main(["train", str(path), "--quiet"]) == 0
    run = Path(cfg["run_dir"])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    gan = [r for r in records if r.get("phase") == "srgan" and "loss" in r]
    assert [r["step"] for r in gan] == [2, 3]
    for r in gan:
        for key in ("loss_d", "loss_pixel", "loss_frequency", "loss_adversarial"):
            assert np.isfinite(r[key]) and r[key] > 0, key
    assert (run / "models" / "srgan.pt").is_file()

"""Checkpoints from the SR ecosystem: rrdbnet / msrresnet load other projects' files as they
are, plus BasicSR wrappers, safetensors, spandrel architectures and the ESRGAN paper config.

Where another project's architecture code is installable, the files here are written by that
code with random weights: spandrel bundles copies of the original ESRGAN (old "model.N"
naming) and Real-ESRGAN Compact networks. BasicSR itself does not install cleanly, so files in
its naming are built as dicts with the key names and shapes of its ``rrdbnet_arch.py`` /
``srresnet_arch.py`` (listed below); spandrel, which reads BasicSR files itself, then serves as
the independent reference for what such a file computes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import REGISTRY, make_images

from plfw.cli import main
from plfw.core.config import load_config
from plfw.core.errors import UserError
from plfw.inference.generators import load_generator, open_generator
from plfw.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


def _spandrel():  # noqa: ANN202
    return pytest.importorskip("spandrel")


def basicsr_rrdbnet_state(feat: int = 8, blocks: int = 2, grow: int = 32, fold: int = 1,
                          seed: int = 0) -> dict[str, torch.Tensor]:
    """Keys and shapes of BasicSR's ``RRDBNet`` (basicsr/archs/rrdbnet_arch.py): conv_first
    (3 * fold**2 inputs: x2 / x1 files pixel-unshuffle first), body.N.rdbK.conv1..5 with
    feat + (J-1) * grow inputs and grow outputs (conv5: feat outputs), conv_body, conv_up1,
    conv_up2, conv_hr, conv_last; every conv 3x3 with bias."""
    g = torch.Generator().manual_seed(seed)
    shapes: dict[str, tuple[int, int]] = {"conv_first": (feat, 3 * fold * fold)}
    for n in range(blocks):
        for k in (1, 2, 3):
            for j in range(1, 6):
                shapes[f"body.{n}.rdb{k}.conv{j}"] = (feat if j == 5 else grow,
                                                      feat + (j - 1) * grow)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        shapes[name] = (feat, feat)
    shapes["conv_last"] = (3, feat)
    state = {}
    for name, (cout, cin) in shapes.items():
        state[f"{name}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * 0.1
        state[f"{name}.bias"] = torch.randn(cout, generator=g) * 0.01
    return state


def basicsr_msrresnet_state(scale: int = 4, feat: int = 8, blocks: int = 2,
                            seed: int = 0) -> dict[str, torch.Tensor]:
    """Keys and shapes of BasicSR's ``MSRResNet`` (basicsr/archs/srresnet_arch.py):
    conv_first, body.N.conv1 / conv2 (ResidualBlockNoBN), upconv1 (feat * 4 outputs, or
    feat * scale**2 for x2 / x3) and upconv2 for x4, conv_hr, conv_last; 3x3 with bias."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"conv_first": (feat, 3)}
    for n in range(blocks):
        shapes[f"body.{n}.conv1"] = shapes[f"body.{n}.conv2"] = (feat, feat)
    shapes["upconv1"] = (feat * (4 if scale == 4 else scale * scale), feat)
    if scale == 4:
        shapes["upconv2"] = (feat * 4, feat)
    shapes["conv_hr"] = (feat, feat)
    shapes["conv_last"] = (3, feat)
    return {k: v for name, (cout, cin) in shapes.items() for k, v in (
        (f"{name}.weight", torch.randn(cout, cin, 3, 3, generator=g) * 0.1),
        (f"{name}.bias", torch.randn(cout, generator=g) * 0.01))}


def msrresnet_reference(state: dict[str, torch.Tensor], x: torch.Tensor,
                        scale: int) -> torch.Tensor:
    """MSRResNet.forward of BasicSR, op by op, straight on the state dict."""
    def conv(name: str, t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, state[f"{name}.weight"], state[f"{name}.bias"], padding=1)

    out = F.leaky_relu(conv("conv_first", x), 0.1)
    n = 0
    while f"body.{n}.conv1.weight" in state:
        out = out + conv(f"body.{n}.conv2", F.relu(conv(f"body.{n}.conv1", out)))
        n += 1
    if scale == 4:
        out = F.leaky_relu(F.pixel_shuffle(conv("upconv1", out), 2), 0.1)
        out = F.leaky_relu(F.pixel_shuffle(conv("upconv2", out), 2), 0.1)
    else:
        out = F.leaky_relu(F.pixel_shuffle(conv("upconv1", out), scale), 0.1)
    out = conv("conv_last", F.leaky_relu(conv("conv_hr", out), 0.1))
    return out + F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


def _spandrel_reference(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    sp = _spandrel()
    descriptor = sp.ModelLoader().load_from_state_dict(dict(state)).eval()
    with torch.no_grad():
        return descriptor.model(x)


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_old_esrgan_files_written_by_the_original_code_load(tmp_path: Path, scale: int) -> None:
    sp = _spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(scale)
    original = ESRGAN(num_filters=8, num_blocks=2, scale=scale).eval()
    path = tmp_path / f"RRDB_ESRGAN_x{scale}.pth"
    torch.save(original.state_dict(), path)  # "model.0.weight", "model.1.sub.0.RDB1..."
    assert "model.1.sub.0.RDB1.conv1.0.weight" in original.state_dict()
    loaded = open_generator(path, REGISTRY)
    assert loaded.spec["name"] == "rrdbnet" and loaded.module.scale == scale
    assert loaded.spec["num_block"] == 2 and loaded.spec["num_feat"] == 8
    x = torch.rand(1, 3, 7, 9)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), original(x), atol=1e-5)
    assert sp  # spandrel was importable


def test_basicsr_and_esrgan_repo_namings_match_spandrel(tmp_path: Path) -> None:
    state = basicsr_rrdbnet_state()
    x = torch.rand(1, 3, 6, 5)
    reference = _spandrel_reference(state, x)
    # The ESRGAN repository's RRDBNet_arch.py names the same tensors RRDB_trunk.N.RDBK.convJ,
    # trunk_conv, upconv1/2 and HRconv.
    renames = [(r"^body\.(\d+)\.rdb(\d)", r"RRDB_trunk.\1.RDB\2"), (r"^conv_body", "trunk_conv"),
               (r"^conv_up(\d)", r"upconv\1"), (r"^conv_hr", "HRconv")]
    repo = {}
    for key, value in state.items():
        for pattern, repl in renames:
            key = re.sub(pattern, repl, key)
        repo[key] = value
    assert "trunk_conv.weight" in repo and "RRDB_trunk.1.RDB3.conv5.bias" in repo
    for name, weights in (("basicsr", {"params_ema": state}), ("esrgan_repo", repo)):
        path = tmp_path / f"{name}.pth"
        torch.save(weights, path)
        module, out_range = load_generator(path, REGISTRY)
        assert out_range == (0.0, 1.0)
        with torch.no_grad():
            assert torch.allclose(module(x), reference, atol=1e-5), name
        # BasicSR naming is plfw's own: the file's keys are the module's keys
        assert set(module.state_dict()) == set(state)


def test_real_esrgan_x2_layout_pixel_unshuffles(tmp_path: Path) -> None:
    state = basicsr_rrdbnet_state(fold=2)
    path = tmp_path / "RealESRGAN_x2plus.pth"
    torch.save({"params_ema": state}, path)
    loaded = open_generator(path, REGISTRY)
    assert loaded.module.scale == 2 and loaded.spec["pixel_unshuffle"] is True
    x = torch.rand(1, 3, 8, 6)  # even sizes: spandrel's model pads nothing either
    with torch.no_grad():
        out = loaded.module(x)
        assert out.shape == (1, 3, 16, 12)
        assert torch.allclose(out, _spandrel_reference(state, x), atol=1e-5)
        assert loaded.module(torch.rand(1, 3, 7, 5)).shape == (1, 3, 14, 10)  # odd: padded


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_basicsr_msrresnet_loads_and_computes_the_original(tmp_path: Path, scale: int) -> None:
    state = basicsr_msrresnet_state(scale)
    path = tmp_path / f"msrresnet_x{scale}.pth"
    torch.save({"params": state}, path)
    loaded = open_generator(path, REGISTRY)
    assert loaded.spec == {"name": "msrresnet", "scale": scale, "num_in_ch": 3,
                           "num_out_ch": 3, "num_feat": 8, "num_block": 2}
    x = torch.rand(1, 3, 5, 7)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), msrresnet_reference(state, x, scale),
                              atol=1e-5)


def test_params_ema_is_preferred_and_safetensors_load(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    ema, raw = basicsr_msrresnet_state(seed=1), basicsr_msrresnet_state(seed=2)
    torch.save({"params": raw, "params_ema": ema}, tmp_path / "both.pth")
    save_file(ema, str(tmp_path / "bare.safetensors"))
    x = torch.rand(1, 3, 4, 4)
    want = msrresnet_reference(ema, x, 4)
    for name in ("both.pth", "bare.safetensors"):
        loaded = open_generator(tmp_path / name, REGISTRY)
        with torch.no_grad():
            assert torch.allclose(loaded.module(x), want, atol=1e-5), name
    assert "params_ema" in open_generator(tmp_path / "both.pth", REGISTRY).how


def test_unknown_weights_name_what_was_tried(tmp_path: Path) -> None:
    path = tmp_path / "mystery.pth"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(UserError) as err:
        load_generator(path, REGISTRY)
    message = str(err.value)
    assert "\n" not in message and "mystery.pth" in message
    for name in ("rrdbnet", "msrresnet", "srresnet", "spandrel"):
        assert name in message
    torch.save({"params": {"step": 3}}, path)
    with pytest.raises(UserError, match="params_ema"):
        load_generator(path, REGISTRY)


@pytest.mark.parametrize("arch", ["rrdbnet", "msrresnet"])
@pytest.mark.parametrize("damage", ["1-D", "zero-size"])
def test_damaged_rrdb_and_msrresnet_tensors_are_one_line_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], arch: str, damage: str) -> None:
    """Issue 36: their keys with a 1-D or an empty tensor where a convolution weight belongs
    (the spec is read from those shapes) were an IndexError traceback or a huge network."""
    state = basicsr_rrdbnet_state() if arch == "rrdbnet" else basicsr_msrresnet_state()
    state["conv_first.weight"] = torch.zeros(8) if damage == "1-D" else torch.zeros(8, 3, 0, 3)
    path = tmp_path / f"{arch}.pth"
    torch.save(state, path)
    with pytest.raises(UserError) as err:
        load_generator(path, REGISTRY)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "conv_first.weight" in message
    assert main(["eval", "--model", str(path), "--hr", str(make_images(tmp_path / "hr", 1)),
                 "--device", "cpu"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_spandrel_architecture_works_in_upscale_and_eval(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _spandrel()
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    compact = Compact(num_feat=8, num_conv=2, upscale=4).eval()  # Real-ESRGAN Compact
    path = tmp_path / "realesr-compact.pth"
    torch.save({"params": compact.state_dict()}, path)
    loaded = open_generator(path, REGISTRY)
    assert loaded.spec is None and "Compact" in loaded.how and loaded.module.scale == 4
    hr = make_images(tmp_path / "hr", 1, (32, 24))
    lr = tmp_path / "lr"
    lr.mkdir()
    from PIL import Image
    Image.open(hr / "img00.png").resize((8, 6)).save(lr / "img00.png")
    out = tmp_path / "out"
    assert main(["upscale", str(lr), "--model", str(path), "--out", str(out), "--quiet",
                 "--device", "cpu"]) == 0
    assert Image.open(out / "img00_x4.png").size == (32, 24)
    capsys.readouterr()
    assert main(["eval", "--model", str(path), "--hr", str(hr), "--scale", "4", "--json",
                 "--device", "cpu"]) == 0
    ev = capsys.readouterr()
    assert json.loads(ev.out)["images"] == 1


ESRGAN = REPO / "configs" / "paper" / "esrgan.yaml"


def test_esrgan_config_has_the_papers_settings() -> None:
    cfg = load_config(ESRGAN)
    assert cfg.generator["name"] == "rrdbnet"
    assert (cfg.generator["num_block"], cfg.generator["num_feat"],
            cfg.generator["num_grow_ch"], cfg.generator["res_scale"]) == (23, 64, 32, 0.2)
    psnr, gan = cfg.phases["psnr"], cfg.phases["esrgan"]
    assert list(cfg.phases) == ["psnr", "esrgan"]
    assert psnr.losses == {"pixel": {"name": "l1", "weight": 1.0}} and psnr.lr == 2e-4
    assert (psnr.gamma, psnr.milestones[0]) == (0.5, 200_000)
    assert gan.lr == 1e-4 and gan.milestones == [50_000, 100_000, 200_000, 300_000]
    content = gan.losses["perceptual"]
    assert content["layers"] == {"conv5_4": 1.0} and content["criterion"] == "l1"
    assert gan.losses["adversarial"]["mode"] == "relativistic"
    assert gan.losses["adversarial"]["weight"] == 5e-3
    assert gan.losses["pixel"] == {"name": "l1", "weight": 1e-2}
    assert cfg.data.train["crop"] == 128 and cfg.data.batch_size == 16


@pytest.mark.slow
def test_esrgan_config_trains_two_steps_per_phase_from_an_esrgan_file(tmp_path: Path) -> None:
    data = make_images(tmp_path / "hr", 3, (48, 48))
    # phase 1 starts from a file in the old ESRGAN naming, as an ESRGAN user would fine-tune
    state = basicsr_rrdbnet_state(feat=8, blocks=1, grow=4)
    old = {"model.0.weight": state["conv_first.weight"], "model.0.bias": state["conv_first.bias"]}
    for k, v in state.items():
        if k.startswith("body."):
            _, n, rdb, conv, kind = k.split(".")
            old[f"model.1.sub.{n}.{rdb.upper()}.{conv}.0.{kind}"] = v
    for src, dst in (("conv_body", "model.1.sub.1"), ("conv_up1", "model.3"),
                     ("conv_up2", "model.6"), ("conv_hr", "model.8"), ("conv_last", "model.10")):
        old[f"{dst}.weight"], old[f"{dst}.bias"] = state[f"{src}.weight"], state[f"{src}.bias"]
    init = tmp_path / "RRDB_PSNR_x4.pth"
    torch.save(old, init)
    cfg = load_config(ESRGAN, [
        f"data.train.root={data}", f"data.val.root={data}", "data.train.crop=32",
        "data.batch_size=2", "data.workers=0", "generator.num_block=1", "generator.num_feat=8",
        "generator.num_grow_ch=4", f"run_dir={tmp_path / 'run'}", "train.device=cpu",
        "train.log_every=1", "train.sample_images=1", "phases.psnr.steps=2",
        f"phases.psnr.init={init}", "phases.esrgan.steps=2",
        "phases.esrgan.discriminator={name: srgan, input_size: 32, channels: 8}",
        "phases.esrgan.losses.perceptual.network.weights=none",
    ])
    summary = Trainer(cfg, REGISTRY, progress=False).fit()
    assert set(summary) == {"bicubic", "psnr", "esrgan"}
    exported, _ = load_generator(tmp_path / "run" / "models" / "esrgan.pt", REGISTRY)
    assert type(exported).__name__ == "RRDBNet"

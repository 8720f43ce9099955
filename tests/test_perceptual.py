"""Perceptual metrics (plfw_builtins.metrics.lpips, loss_networks.trunks): values against the
reference packages, shift tolerance, tiling, weight loading (hub cache, resolve hook, file), offline
errors, attributes.

The reference implementations are imported only here, to check our values: ``stlpips_pytorch``
imports IPython and torchsummary without declaring them, so those two are stubbed in sys.modules
when absent (a third party's missing dependency, not our code). torchvision weights cannot be
downloaded here: a randomly initialised torchvision model saved under its torchvision file name
in a temporary hub cache checks the loading path without a download.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import plfw
from plfw.core.errors import UserError
from plfw.core.plugins import load_plugins

PHOTOS = Path(__file__).resolve().parents[1] / "assets" / "photos"
pytest.importorskip("stlpips_pytorch")
pytest.importorskip("lpips")


def photo(name: str = "val/chelsea.png") -> torch.Tensor:
    img = np.asarray(Image.open(PHOTOS / name).convert("RGB"))
    return torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 255


def q8(x: torch.Tensor) -> torch.Tensor:
    """As a saved 8-bit image."""
    return (x.clamp(0, 1) * 255).round() / 255


def bicubic_x4(hr: torch.Tensor) -> torch.Tensor:
    """The usual SR degradation: bicubic down x4 and back up, quantised."""
    h, w = hr.shape[-2:]
    lr = F.interpolate(hr[None], size=(h // 4, w // 4), mode="bicubic", antialias=True)
    return q8(F.interpolate(lr, size=(h, w), mode="bicubic")[0])


def reference_stlpips(net: str) -> torch.nn.Module:
    for name in ("IPython", "torchsummary"):
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            stub = types.ModuleType(name)
            stub.embed = lambda *a, **k: None  # type: ignore[attr-defined]
            stub.summary = lambda *a, **k: None  # type: ignore[attr-defined]
            sys.modules[name] = stub
    from stlpips_pytorch import stlpips

    return stlpips.LPIPS(net=net, variant="shift_tolerant", verbose=False).eval()


@pytest.mark.parametrize("net,crop", [("alex", 240), ("vgg", 128)])
def test_st_lpips_reproduces_the_reference_package(net: str, crop: int) -> None:
    """A shipped photo against its bicubic x4 down-and-up version (a crop, to stay fast)."""
    hr = photo()[:, 30:30 + crop, 100:100 + crop]
    sr = bicubic_x4(hr)
    ours = plfw.build("metric", f"st_lpips_{net}")(sr, hr)
    with torch.no_grad():
        ref = reference_stlpips(net)(sr[None], hr[None], normalize=True).item()
    assert ours == pytest.approx(ref, rel=1e-4, abs=1e-6)
    assert 0.05 < ours < 1


def test_one_pixel_shift_scores_far_below_a_blur() -> None:
    hr = photo()[:, 20:220, 120:321]
    a, b = hr[:, :, 1:], hr[:, :, :-1]  # the same scene, one pixel apart
    blurred = q8(F.avg_pool2d(F.pad(a[None], (2, 2, 2, 2), mode="reflect"), 5, 1)[0])
    metric = plfw.build("metric", "st_lpips_alex")
    shift, blur = metric(b, a), metric(blurred, a)
    assert shift < blur / 10, (shift, blur)
    assert metric(a, a) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("name", ["st_lpips_alex", "dists"])
def test_tiles_give_the_whole_image_value(name: str) -> None:
    """Tiles read with a margin beyond the receptive field sum exactly the whole image's
    positions (dists with a random trunk: only the arithmetic is under test)."""
    hr = photo()[:, 40:160, 100:260]
    sr = bicubic_x4(hr)
    metric = plfw.build("metric", {"name": name, "tile": 0, "weights": "none"}
                        if name == "dists" else {"name": name, "tile": 0})
    whole = metric(sr, hr)
    metric.tile = 64  # 2 x 3 tiles
    assert metric(sr, hr) == pytest.approx(whole, rel=1e-6, abs=1e-9)


def test_attributes_higher_is_better_and_networks() -> None:
    expected = {"psnr_y": (True, ()), "ssim_y": (True, ()),
                "st_lpips_alex": (False, ("st_lpips_alex",)),
                "st_lpips_vgg": (False, ("st_lpips_vgg",)),
                "lpips_alex": (False, ("alexnet",)), "lpips_vgg": (False, ("vgg16",)),
                "dists": (False, ("dists_vgg16", "vgg16"))}
    features = set(plfw.list_components("feature_extractor"))
    for name, (higher, networks) in expected.items():
        spec = {"name": name} if name in ("psnr_y", "ssim_y") else {"name": name,
                                                                     "weights": "none"}
        metric = plfw.build("metric", spec)
        assert metric.higher_is_better is higher, name
        assert metric.networks == networks, name
        assert set(networks) <= features, name


# --- torchvision weights: hub cache, resolve hook, file, offline error --------------------------


def _random_features(arch: str) -> torch.nn.Sequential:
    """torchvision's ``arch().features``, randomly initialised (without building the large
    classifier, which the trunk never reads)."""
    import torchvision.models as tvm
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    return tvm.alexnet().features if arch == "alexnet" else make_layers(cfgs["D"])


def _fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, arch: str) -> dict:
    """Random torchvision ``arch`` weights (torchvision's keys, ``features.*``) saved under
    torchvision's file name in a temporary hub cache."""
    from plfw_builtins.loss_networks.trunks import torchvision_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("PLFW_OFFLINE", "1")
    state = {f"features.{k}": v for k, v in _random_features(arch).state_dict().items()}
    _, cached = torchvision_file(arch)
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    return state


def _reference_lpips(net: str, state: dict) -> torch.nn.Module:
    """The lpips package's network with the same trunk weights as ours."""
    import lpips

    ref = lpips.LPIPS(net=net, pnet_rand=True, verbose=False).eval()
    slices = {}
    for name, module in ref.net.named_children():
        for idx, _ in module.named_children():
            slices[idx] = name
    for key, value in state.items():
        _, idx, tensor = key.split(".")
        getattr(ref.net, slices[idx]).get_submodule(idx).get_parameter(tensor).data.copy_(value)
    return ref


@pytest.mark.parametrize("arch,net", [("alexnet", "alex"), ("vgg16", "vgg")])
def test_lpips_loads_torchvision_weights_from_the_hub_cache(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, arch: str, net: str) -> None:
    state = _fake_hub(monkeypatch, tmp_path, arch)
    hr = photo()[:, :96, :128]
    sr = bicubic_x4(hr)
    ours = plfw.build("metric", f"lpips_{net}")(sr, hr)
    with torch.no_grad():
        ref = _reference_lpips(net, state)(sr[None], hr[None], normalize=True).item()
    assert ours == pytest.approx(ref, rel=1e-4, abs=1e-7)


def test_dists_matches_the_reference_package(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    pytest.importorskip("DISTS_pytorch")
    from DISTS_pytorch import DISTS_pt

    state = _fake_hub(monkeypatch, tmp_path, "vgg16")
    if not (Path(sys.prefix) / "weights.pt").is_file():
        pytest.skip("DISTS_pytorch's reference reads weights.pt from sys.prefix; not there")
    features = _random_features("vgg16")
    features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()})
    # The reference asks torchvision for pretrained VGG16 (a download): hand it ours instead.
    monkeypatch.setattr(DISTS_pt.models, "vgg16",
                        lambda *a, **k: types.SimpleNamespace(features=features))
    hr = photo()[:, :96, :128]
    sr = bicubic_x4(hr)
    with torch.no_grad():
        ref = DISTS_pt.DISTS()(sr[None], hr[None]).item()
    ours = plfw.build("metric", "dists")(sr, hr)
    assert ours == pytest.approx(ref, rel=1e-4, abs=1e-6)


def test_resolve_weights_hook_and_a_file_supply_the_trunk(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    import torchvision.models as tvm

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("PLFW_OFFLINE", "1")
    file = tmp_path / "my_alexnet.pth"
    torch.save(tvm.alexnet().state_dict(), file)  # a complete torchvision file
    (tmp_path / "alex_weights_plugin.py").write_text(textwrap.dedent(f"""
        import plfw

        @plfw.hookimpl
        def plfw_resolve_weights(kind, name, weights):
            if (kind, name, weights) == ("feature_extractor", "alexnet", "torchvision"):
                return {str(file)!r}
            return None
    """))
    hr = photo()[:, :64, :64]
    by_file = plfw.build("metric", {"name": "lpips_alex", "weights": str(file)})(q8(hr * 0.9),
                                                                                 hr)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PLFW_PLUGINS", "alex_weights_plugin")
    registry = load_plugins().registry
    by_hook = registry.build("metric", "lpips_alex")(q8(hr * 0.9), hr)
    assert by_hook == by_file > 0
    net = registry.build("feature_extractor", {"name": "alexnet", "taps": ["relu2"]})
    torch.testing.assert_close(net.features[3].weight,
                               torch.load(file, weights_only=True)["features.3.weight"])


@pytest.mark.parametrize("name,file", [("lpips_alex", "alexnet-owt-7be5be79.pth"),
                                       ("lpips_vgg", "vgg16-397923af.pth"),
                                       ("dists", "vgg16-397923af.pth")])
def test_offline_without_weights_is_one_line_naming_file_and_alternatives(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, file: str) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("PLFW_OFFLINE", "1")
    with pytest.raises(UserError) as err:
        plfw.build("metric", name)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / file) in message
    assert "st_lpips_alex" in message and "st_lpips_vgg" in message


def test_networks_work_as_frozen_loss_networks() -> None:
    from plfw.nn.features import IMAGENET, is_frozen

    for name, taps in (("st_lpips_alex", ["relu1", "relu3"]),
                       ("st_lpips_vgg", ["relu2_2"]),
                       ("alexnet", ["relu5"]), ("dists_vgg16", ["relu3_3"])):
        weights = "stlpips" if name.startswith("st_") else "none"
        net = plfw.build("feature_extractor", {"name": name, "taps": taps, "weights": weights})
        assert is_frozen(net) and net.input_spec == IMAGENET and net.taps == tuple(taps)
        x = torch.rand(1, 3, 48, 48, requires_grad=True)
        out = net(net.input_spec.convert(x))
        assert list(out) == taps
        sum(f.mean() for f in out.values()).backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        assert all(p.grad is None for p in net.parameters())


def test_lpips_loss_trains_the_generator_side_only() -> None:
    loss = plfw.build("loss", {"name": "lpips", "network": "st_lpips_alex"})
    loss.set_image_range(-1.0, 1.0)
    hr = torch.rand(2, 3, 40, 40) * 2 - 1
    sr = (hr + 0.2 * torch.randn_like(hr)).clamp(-1, 1).requires_grad_(True)
    value = loss(sr, hr)
    value.backward()
    assert value.item() > 0 and sr.grad.abs().sum() > 0
    assert loss(hr, hr).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(UserError, match="did you mean: alexnet"):
        plfw.build("loss", {"name": "lpips", "network": "alexnt"})


def test_unknown_tap_and_small_image_are_one_line_errors() -> None:
    with pytest.raises(UserError, match="did you mean: relu5"):
        plfw.build("feature_extractor", {"name": "st_lpips_alex", "taps": ["relu6"]})
    metric = plfw.build("metric", {"name": "st_lpips_alex", "border": 4})
    with pytest.raises(UserError, match="too small"):
        metric(torch.rand(3, 36, 36), torch.rand(3, 36, 36))


def test_offline_message_from_plfw_eval_says_what_works_there(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`plfw eval --metrics lpips_alex` offline said 'set weights=/path', which eval cannot
    pass. It names the metric, the hub-cache file, TORCH_HOME, the plfw_resolve_weights call
    a plugin answers, and that --metrics takes names only; the hook it names then works."""
    from plfw.cli import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("PLFW_OFFLINE", "1")
    for folder in ("hr", "sr"):
        (tmp_path / folder).mkdir()
        Image.fromarray((photo()[:, :64, :64].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
                        ).save(tmp_path / folder / "a.png")
    argv = ["eval", "--sr", str(tmp_path / "sr"), "--hr", str(tmp_path / "hr"), "--scale", "4",
            "--metrics", "psnr_y,lpips_alex"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("plfw: error: metric 'lpips_alex' (its "
                                                   "feature_extractor 'alexnet'): ")
    cache = tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert f"put the file at {cache}" in err and "TORCH_HOME=DIR" in err
    hook = "plfw_resolve_weights(kind='feature_extractor', name='alexnet', weights='torchvision')"
    assert hook in err and "plfw eval --metrics takes names only" in err
    file = tmp_path / "alexnet.pth"
    torch.save({f"features.{k}": v for k, v in _random_features("alexnet").state_dict().items()},
               file)
    (tmp_path / "offline_alexnet_plugin.py").write_text(textwrap.dedent(f"""
        import plfw

        @plfw.hookimpl
        def plfw_resolve_weights(kind, name, weights):
            if (kind, name, weights) == ("feature_extractor", "alexnet", "torchvision"):
                return {str(file)!r}
            return None
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PLFW_PLUGINS", "offline_alexnet_plugin")
    assert main([*argv, "--json"]) == 0

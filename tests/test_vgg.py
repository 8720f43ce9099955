"""VGG loss networks: bundled Caffe weights, taps, freezing, and every way to get weights."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import plfw
import plfw.core.plugins
from plfw.core.errors import UserError
from plfw.nn.features import CAFFE, IMAGENET


def vgg(name: str = "vgg19", **params) -> nn.Module:
    return plfw.build("feature_extractor", {"name": name, **params})


@pytest.fixture(scope="module")
def caffe_vgg19() -> nn.Module:
    """The bundled VGG19 with the paper's VGG54 tap and its pre-activation, built once."""
    import plfw.core.plugins

    registry = plfw.core.plugins.load_plugins().registry  # not the per-test cache
    return registry.build("feature_extractor", {"name": "vgg19", "taps": ["conv5_4", "relu5_4"]})


def neighbour_similarity(w: torch.Tensor) -> torch.Tensor:
    """Per 3x3 kernel: cosine similarity between horizontally and vertically adjacent taps,
    after removing the kernel's mean. Trained early-layer kernels are smooth (edge and blob
    detectors), so this is clearly positive; for i.i.d. random weights it is slightly negative."""
    k = w.reshape(-1, 3, 3)
    k = k - k.mean(dim=(1, 2), keepdim=True)
    a = torch.cat([k[:, :, :-1].flatten(1), k[:, :-1, :].flatten(1)], 1)
    b = torch.cat([k[:, :, 1:].flatten(1), k[:, 1:, :].flatten(1)], 1)
    return nn.functional.cosine_similarity(a, b, dim=1)


def test_caffe_vgg19_is_pretrained(caffe_vgg19: nn.Module) -> None:
    """No classifier head ships with these weights, so check structure learnt from images:
    smooth kernels (measured ~0.9 of kernels smooth vs ~0.3 for random init) and, in conv1_1,
    near-identical kernels across the three colour channels up to sign and scale (luminance
    edges and colour-opponent filters; median |corr| measured 0.996 vs 0.26 random)."""
    torch.manual_seed(0)
    random = vgg(taps=["conv2_1"], weights="none")
    for i in (0, 2, 5):  # conv1_1, conv1_2, conv2_1
        trained = (neighbour_similarity(caffe_vgg19.layers[i].weight) > 0).float().mean()
        untrained = (neighbour_similarity(random.layers[i].weight) > 0).float().mean()
        assert trained > 0.8 > 0.5 > untrained

    def channel_corr(w: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.corrcoef(f.flatten(1))[[0, 0, 1], [1, 2, 2]] for f in w])

    assert channel_corr(caffe_vgg19.layers[0].weight).abs().median() > 0.9
    assert channel_corr(random.layers[0].weight).abs().median() < 0.5


def test_caffe_weights_are_the_quantised_tables(caffe_vgg19: nn.Module) -> None:
    convs = [m for m in caffe_vgg19.layers if isinstance(m, nn.Conv2d)]
    assert len(convs) == 16
    assert all(convs[i].weight.unique().numel() <= 256 for i in (0, 8, 15))
    assert caffe_vgg19.input_spec == CAFFE


def test_pretrained_deep_features_are_sparse(caffe_vgg19: nn.Module) -> None:
    """Trained ReLU features fire sparsely (measured ~91% zeros at relu5_4) where a random
    network's are zero about half the time."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64)
    for net, low, high in ((caffe_vgg19, 0.8, 1.0), (vgg(weights="none"), 0.3, 0.7)):
        with torch.no_grad():
            feat = net(net.input_spec.convert(x))["relu5_4"]
        assert low < (feat == 0).float().mean() < high


def test_conv_tap_is_the_real_pre_activation(caffe_vgg19: nn.Module) -> None:
    net = caffe_vgg19
    assert len(net.layers) == 36  # truncated after relu5_4: no pool5
    with torch.no_grad():
        out = net(net.input_spec.convert(torch.rand(1, 3, 48, 48)))
    assert set(out) == {"conv5_4", "relu5_4"}
    assert (out["conv5_4"] < 0).any()
    assert (out["relu5_4"] >= 0).all()
    torch.testing.assert_close(out["relu5_4"], out["conv5_4"].clamp(min=0))


@pytest.mark.parametrize("taps", [["relu5_4"], ["conv1_2", "relu2_1", "conv3_1", "pool3"]])
def test_in_place_relus_keep_taps_and_gradients(taps: list[str]) -> None:
    net = vgg(taps=taps, weights="none")
    inplace = [m.inplace for m in net.layers if isinstance(m, nn.ReLU)]
    assert any(inplace)
    twin = copy.deepcopy(net)
    for m in twin.layers:
        if isinstance(m, nn.ReLU):
            m.inplace = False
    x = torch.rand(2, 3, 32, 32)
    results = []
    for n in (net, twin):
        xi = x.clone().requires_grad_(True)
        out = n(xi)
        sum(v.square().mean() for v in out.values()).backward()
        results.append((out, xi.grad))
    (out, grad), (ref, ref_grad) = results
    for tap in taps:
        torch.testing.assert_close(out[tap], ref[tap])
        if tap.startswith("conv"):
            assert (out[tap] < 0).any()  # a conv tap is still the pre-activation
    torch.testing.assert_close(grad, ref_grad)


def test_truncated_at_deepest_tap_and_pool_taps() -> None:
    net = vgg(taps=["relu2_2"], weights="none")
    assert len(net.layers) == 9
    out = net(torch.rand(1, 3, 32, 32))
    assert out["relu2_2"].shape == (1, 128, 16, 16)
    assert vgg(taps=["pool1"], weights="none")(torch.rand(1, 3, 8, 8))["pool1"].shape[-1] == 4


def test_gradients_reach_the_image_not_the_weights() -> None:
    net = vgg(taps=["relu2_2"])
    assert not any(p.requires_grad for p in net.parameters())
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    net(net.input_spec.convert(x))["relu2_2"].square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


def test_parent_train_does_not_unfreeze() -> None:
    net = vgg(taps=["relu1_2"], weights="none")
    parent = nn.ModuleDict({"generator": nn.Conv2d(3, 3, 1), "loss_net": net})
    parent.train()
    assert parent["generator"].training
    assert not any(m.training for m in net.modules())


def test_unknown_tap_suggests_names() -> None:
    with pytest.raises(UserError, match="did you mean: relu5_4"):
        vgg(taps=["relu5_5"], weights="none")
    with pytest.raises(UserError, match="relu4_4"):
        vgg("vgg16", taps=["relu4_4"], weights="none")


def test_input_spec_follows_weights(tmp_path: Path) -> None:
    assert vgg(taps=["relu1_1"], weights="none").input_spec == IMAGENET
    path = tmp_path / "vgg.pth"
    torch.save(vgg(taps=["relu1_1"], weights="none").layers.state_dict(), path)
    assert vgg(taps=["relu1_1"], weights=str(path)).input_spec == IMAGENET
    assert vgg(taps=["relu1_1"], weights=str(path), input="caffe").input_spec == CAFFE
    with pytest.raises(UserError, match="expects input=caffe"):
        vgg(taps=["relu1_1"], input="imagenet")


@pytest.mark.parametrize("prefix", ["features.", ""])
def test_local_torchvision_layout_file(tmp_path: Path, prefix: str) -> None:
    torch.manual_seed(0)
    source = vgg("vgg16", taps=["relu2_1"], weights="none")
    path = tmp_path / "vgg16.pth"
    torch.save({prefix + k: v for k, v in source.layers.state_dict().items()}, path)
    net = vgg("vgg16", taps=["relu2_1"], weights=str(path))
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(net(x)["relu2_1"], source(x)["relu2_1"])


def test_bad_local_files_are_user_errors(tmp_path: Path) -> None:
    odd = tmp_path / "odd.pth"
    torch.save({"encoder.weight": torch.zeros(1)}, odd)
    with pytest.raises(UserError, match="unknown weights layout in .*odd.pth"):
        vgg(weights=str(odd))
    short = tmp_path / "short.pth"
    torch.save(vgg(taps=["relu1_1"], weights="none").layers.state_dict(), short)
    with pytest.raises(UserError, match="short.pth lacks"):
        vgg(taps=["relu2_2"], weights=str(short))
    with pytest.raises(UserError, match="not caffe, torchvision, none or an existing file"):
        vgg(weights=str(tmp_path / "missing.pth"))


def test_default_taps_are_the_last_activation() -> None:
    assert vgg(weights="none").taps == ("relu5_4",)
    assert vgg("vgg16", weights="none").taps == ("relu5_3",)


def test_vgg16_has_no_caffe_weights() -> None:
    with pytest.raises(UserError, match="caffe weights exist only for vgg19"):
        vgg("vgg16", weights="caffe")


def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An empty torch hub cache and a proxy that refuses connections: a machine offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")


def test_torchvision_weights_offline_names_the_ways(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    _offline(monkeypatch, tmp_path)
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    with pytest.raises(UserError) as err:
        vgg(weights="torchvision", taps=["relu1_1"])
    message = str(err.value)
    assert "\n" not in message
    assert "weights=caffe" in message and str(cached) in message
    assert "weights=/path/to/" in message


def test_torchvision_weights_from_hub_cache(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    _offline(monkeypatch, tmp_path)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    source = vgg("vgg16", taps=["relu1_2"], weights="none")
    state = {f"features.{k}": v for k, v in source.layers.state_dict().items()}
    torch.save({**state, "classifier.0.bias": torch.zeros(4096)}, cache / "vgg16-397923af.pth")
    net = vgg("vgg16", taps=["relu1_2"])
    assert net.input_spec == IMAGENET
    torch.testing.assert_close(net.layers[2].weight, source.layers[2].weight)


def test_resolve_weights_hook_supplies_the_file(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    """A third-party plugin answering plfw_resolve_weights wins over the download."""
    _offline(monkeypatch, tmp_path)
    weights = tmp_path / "mine.pth"
    (tmp_path / "weights_plugin.py").write_text(textwrap.dedent(f"""
        from pathlib import Path
        import plfw

        @plfw.hookimpl
        def plfw_resolve_weights(kind, name, weights):
            if (kind, name, weights) == ("feature_extractor", "vgg19", "torchvision"):
                return Path({str(weights)!r})
            return None
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PLFW_PLUGINS", "weights_plugin")
    registry = plfw.core.plugins.load_plugins().registry  # with the weights plugin
    source = vgg(taps=["relu1_1"], weights="none")
    torch.save(source.layers.state_dict(), weights)
    net = registry.build("feature_extractor", {"name": "vgg19", "taps": ["relu1_1"],
                                               "weights": "torchvision"})
    assert net.input_spec == IMAGENET
    torch.testing.assert_close(net.layers[0].weight, source.layers[0].weight)

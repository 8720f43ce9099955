"""The networks inside the learned perceptual measures, as loss networks: ``st_lpips_alex``,
``st_lpips_vgg`` (Ghildyal & Liu, ECCV 2022; the complete networks ship inside the
``stlpips-pytorch`` wheel), ``alexnet`` (LPIPS-Alex's trunk, torchvision's ImageNet weights) and
``dists_vgg16`` (VGG16 with DISTS's L2 pooling, Ding et al., TPAMI 2020); LPIPS-VGG's trunk is
``vgg16``. The metrics built on them are in :mod:`plfw_builtins.metrics.lpips`.

Only weight *files* are read from the other packages (with ``torch.load(weights_only=True)``);
their modules are never imported (``stlpips_pytorch`` imports IPython and torchsummary without
declaring them). The networks below are plfw's own, laid out so the files load into them.
ST-LPIPS replaces AlexNet's / VGG16's strided layers by stride-1 max pools (AlexNet: a stride-1
first convolution) each followed by a 3x3 binomial blur with stride 2 and 2-pixel reflection
padding, so features barely move when the image shifts by a pixel. DISTS replaces VGG16's max
pools by an L2 pool (3x3 Hann window, stride 2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import plfw
from plfw import (
    IMAGENET,
    Hub,
    Packaged,
    Registry,
    Source,
    TapExtractor,
    UserError,
    freeze,
    read_weights,
    resolve_weights,
)

KIND = "feature_extractor"
#: the metrics whose networks ship in a wheel (no download)
OFFLINE_METRICS = ("st_lpips_alex", "st_lpips_vgg")


def _conv(cin: int, cout: int, k: int = 3, s: int = 1, p: int = 1) -> tuple:
    return ("conv", cin, cout, k, s, p)


def _vgg16_layers(pool: Callable[[int], list[tuple]]) -> list[tuple]:
    layers: list[tuple] = []
    cin = 3
    for b, (width, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
        if b:
            layers += pool(cin)
        for _ in range(convs):
            layers += [_conv(cin, width), ("relu",)]
            cin = width
    return layers


VGG16_TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


ALEX_TAPS = ("relu1", "relu2", "relu3", "relu4", "relu5")


@dataclass(frozen=True)
class Arch:
    """A trunk: its layers, which layer outputs are taps, and where its weights come from."""

    name: str
    layers: tuple[tuple, ...]
    tap_names: tuple[str, ...]
    weights: str  # the default weights keyword


ARCHS = {
    # Shift-tolerant AlexNet: conv1 at stride 1, every stride-2 step a blur; taps after each ReLU
    # of the last three convs and of the first two stages.
    "st_lpips_alex": Arch("st_lpips_alex", (
        _conv(3, 64, 11, 1, 2), ("blur", 64), ("relu",),
        ("max", 3, 1), ("blur", 64), _conv(64, 192, 5, 1, 2), ("relu",),
        ("max", 3, 1), ("blur", 192), _conv(192, 384), ("relu",),
        _conv(384, 256), ("relu",), _conv(256, 256), ("relu",)), ALEX_TAPS, "stlpips"),
    "st_lpips_vgg": Arch("st_lpips_vgg", tuple(_vgg16_layers(
        lambda c: [("max", 2, 1), ("blur", c)])), VGG16_TAPS, "stlpips"),
    "alexnet": Arch("alexnet", (
        _conv(3, 64, 11, 4, 2), ("relu",), ("max", 3, 2), _conv(64, 192, 5, 1, 2), ("relu",),
        ("max", 3, 2), _conv(192, 384), ("relu",), _conv(384, 256), ("relu",),
        _conv(256, 256), ("relu",)), ALEX_TAPS, "torchvision"),
    "vgg16": Arch("vgg16", tuple(_vgg16_layers(lambda c: [("max", 2, 2)])), VGG16_TAPS,
                  "torchvision"),
    "dists_vgg16": Arch("dists_vgg16", tuple(_vgg16_layers(lambda c: [("l2pool", c)])),
                        VGG16_TAPS, "torchvision"),
}


# Layer index of each tap: AlexNet's taps are all its ReLUs; VGG16's the last ReLU per block.
_TAP_INDEX = {
    name: ([i for i, layer in enumerate(a.layers) if layer[0] == "relu"] if "alex" in name
           else [i for i, layer in enumerate(a.layers) if layer[0] == "relu" and
                 (i + 1 == len(a.layers) or a.layers[i + 1][0] not in ("conv", "relu"))])
    for name, a in ARCHS.items()
}


TORCHVISION_WEIGHTS = {"alexnet": "AlexNet_Weights", "vgg16": "VGG16_Weights",
                       "dists_vgg16": "VGG16_Weights"}


class BlurDown(nn.Module):
    """Anti-aliased downsampling: reflection-pad 2, 3x3 binomial blur, stride 2 (per channel)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("filt", (torch.outer(k, k) / 16).expand(channels, 1, 3, 3).clone())

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2,
                        groups=x.shape[1])


class L2Pool(nn.Module):
    """DISTS's L2 pooling: sqrt of a 3x3 Hann-weighted mean of squares, stride 2, zero pad 1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        k = torch.tensor([0.5, 1.0, 0.5])
        w = torch.outer(k, k)
        self.register_buffer("filter", (w / w.sum()).expand(channels, 1, 3, 3).clone())

    def forward(self, x: Tensor) -> Tensor:
        out = F.conv2d(x.square(), self.filter, stride=2, padding=1, groups=x.shape[1])
        return (out + 1e-12).sqrt()


def _layer(spec: tuple) -> nn.Module:
    op, *args = spec
    if op == "conv":
        cin, cout, k, s, p = args
        return nn.Conv2d(cin, cout, k, stride=s, padding=p)
    if op == "relu":
        return nn.ReLU(inplace=False)
    if op == "max":
        return nn.MaxPool2d(args[0], stride=args[1])
    if op == "blur":
        return BlurDown(args[0])
    return L2Pool(args[0])


def _window(spec: tuple) -> tuple[int, int]:
    """(kernel, stride) of a layer spec, for receptive-field and alignment bookkeeping."""
    op = spec[0]
    if op == "conv":
        return spec[3], spec[4]
    if op == "max":
        return spec[1], spec[2]
    return {"relu": (1, 1), "blur": (5, 2), "l2pool": (3, 2)}[op]


class Trunk(TapExtractor):
    """A frozen backbone cut at its deepest tap. As a loss network (``plfw`` feature extractor)
    its forward takes ``input_spec``-converted images and returns ``{tap: feature map}``;
    ``iter_taps`` yields the taps one by one so a metric can drop each map once used."""

    def __init__(self, arch: Arch, taps: Sequence[str] | None = None,
                 state: dict[str, Tensor] | None = None, source: str = "") -> None:
        where = f"{KIND} '{arch.name}'"
        super().__init__(list(arch.tap_names if taps is None else taps), arch.tap_names,
                         IMAGENET, where, network_order=True)
        self.arch = arch.name
        index = dict(zip(arch.tap_names, _TAP_INDEX[arch.name], strict=True))
        self._tap_at = {index[t]: t for t in self.taps}
        last = max(self._tap_at)
        self.features = nn.Sequential(*[_layer(s) for s in arch.layers[: last + 1]])
        for m in self.features:
            if isinstance(m, nn.Conv2d):  # torchvision's VGG/AlexNet init for random trunks
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        # Cumulative stride and channels at each tap, and the deepest tap's receptive field
        # (a blur reads 3 taps of a 2-pixel-padded input: counted as 5, which is generous).
        stride, rf, channels = 1, 1, 3
        self.tap_strides: dict[str, int] = {}
        self.tap_channels: dict[str, int] = {}
        for i, spec in enumerate(arch.layers[: last + 1]):
            kernel, step = _window(spec)
            rf += (kernel - 1) * stride
            stride *= step
            channels = spec[2] if spec[0] == "conv" else channels
            if i in self._tap_at:
                self.tap_strides[self._tap_at[i]] = stride
                self.tap_channels[self._tap_at[i]] = channels
        self.receptive_field = rf
        if state is not None:
            load_layers(self.features, state, where, source)
        freeze(self)

    def iter_taps(self, x: Tensor) -> Iterator[tuple[str, Tensor]]:
        return self.iter_stack(self.features, self._tap_at, x)


def load_layers(module: nn.Module, state: dict[str, Tensor], where: str, source: str) -> None:
    """Load the layers the (possibly truncated) module has; buffers absent from the file keep
    their construction (the fixed blur and pooling windows)."""
    own = module.state_dict()
    params = {k for k, _ in module.named_parameters()}
    missing = sorted(k for k in params if k not in state)
    if missing:
        raise UserError(f"{where}: {source} lacks {missing[0]} ({len(missing)} tensors missing); "
                        f"is it the right network?")
    picked = {k: state[k] for k in own if k in state}
    for k, v in picked.items():
        if v.shape != own[k].shape:
            raise UserError(f"{where}: {source}: {k} has shape {tuple(v.shape)}, the network "
                            f"needs {tuple(own[k].shape)}")
    module.load_state_dict(picked, strict=False)


INSTALL = "pip install 'plfw[metrics]'"


def stlpips_file(net: str, where: str) -> Path:
    """The complete ST-LPIPS network (trunk + heads) shipped in the stlpips-pytorch wheel."""
    return Packaged("stlpips_pytorch", f"weights/vST0.0/{net}_shift_tolerant.pth",
                    INSTALL).fetch(where)


def st_layout(raw: dict[str, Tensor], path: Path | str, where: str
               ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(trunk state keyed ``I.tensor``, head weights keyed by tap number) from a file in the
    ST-LPIPS layout (``net.sliceK.I.tensor``, ``linK.model.1.weight``)."""
    shift, scale = raw.get("scaling_layer.shift"), raw.get("scaling_layer.scale")
    if shift is not None and scale is not None:
        # The file's input scaling must be ImageNet's mean/std, written for [-1, 1] input.
        mean, std = (1 + shift.flatten()) / 2, scale.flatten() / 2
        if not (torch.allclose(mean, torch.tensor(IMAGENET.mean), atol=1e-6)
                and torch.allclose(std, torch.tensor(IMAGENET.std), atol=1e-6)):
            raise UserError(f"{where}: {path} has an unexpected input scaling")
    trunk, heads = {}, {}
    for key, value in raw.items():
        parts = key.split(".")
        if parts[0] == "net" and len(parts) == 4:
            trunk[f"{parts[2]}.{parts[3]}"] = value
        elif parts[0].startswith("lin") and parts[-1] == "weight":
            heads[parts[0][3:]] = value
    return trunk, heads


def weight_sources(arch_name: str) -> dict[str, Source]:
    """What the ``weights`` keyword of a trunk stands for (see plfw.nn.weights)."""
    arch = ARCHS[arch_name]
    if arch.weights == "stlpips":
        net = "alex" if "alex" in arch_name else "vgg"
        return {"stlpips": Packaged("stlpips_pytorch",
                                    f"weights/vST0.0/{net}_shift_tolerant.pth", INSTALL)}
    url, _ = torchvision_file(arch_name)
    return {"torchvision": Hub(url, hint=f"; or use the offline metrics "
                                         f"{', '.join(OFFLINE_METRICS)} (no download)")}


def torchvision_file(arch: str) -> tuple[str, Path]:
    """torchvision's ImageNet weights for ``arch``: (download URL, hub-cache path)."""
    import torchvision.models as tvm

    url = getattr(tvm, TORCHVISION_WEIGHTS[arch]).IMAGENET1K_V1.url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def build_trunk(arch_name: str, taps: Sequence[str] | None, weights: str,
                registry: Registry | None = None, where: str = ""
                ) -> tuple[Trunk, dict[str, Tensor]]:
    """A frozen trunk with ``weights`` (``none``, its keyword or a file, looked up as
    plfw.nn.weights does) and the LPIPS head weights found in the same file (ST-LPIPS layout).
    ``where`` names what the user asked for in messages (a metric built on this trunk)."""
    arch = ARCHS[arch_name]
    where = where or f"{KIND} '{arch_name}'"
    if weights == "none":
        return Trunk(arch, taps), {}
    path = resolve_weights(KIND, arch_name, weights, registry=registry,
                           sources=weight_sources(arch_name), where=where)
    assert path is not None  # every keyword has a source
    raw = read_weights(path, where)
    heads: dict[str, Tensor] = {}
    if any(k.startswith("net.slice") for k in raw):
        state, heads = st_layout(raw, path, where)
    else:
        state = {k.removeprefix("features."): v for k, v in raw.items()}
    return Trunk(arch, taps, state, str(path)), heads


@dataclass
class STLPIPSTrunkParams:
    """Shift-tolerant trunk of ST-LPIPS (bundled in stlpips-pytorch); weights stlpips | none |
    file."""

    taps: list[str] = field(default_factory=lambda: ["relu5"])
    weights: str = "stlpips"


@dataclass
class STLPIPSVGGTrunkParams:
    """Shift-tolerant VGG16 trunk of ST-LPIPS (bundled in stlpips-pytorch); weights stlpips |
    none | file."""

    taps: list[str] = field(default_factory=lambda: ["relu5_3"])
    weights: str = "stlpips"


@dataclass
class AlexNetParams:
    """torchvision AlexNet trunk (LPIPS-Alex's); taps relu1..relu5; weights torchvision | none |
    file."""

    taps: list[str] = field(default_factory=lambda: ["relu5"])
    weights: str = "torchvision"


@dataclass
class DISTSVGGParams:
    """VGG16 with DISTS's L2 pooling; taps relu1_2..relu5_3; weights torchvision | none | file."""

    taps: list[str] = field(default_factory=lambda: ["relu5_3"])
    weights: str = "torchvision"


def _extractor(name: str) -> Callable[..., Trunk]:
    def build(p: Any, registry: Registry | None = None) -> Trunk:
        return build_trunk(name, list(p.taps), p.weights, registry)[0]

    return build


@plfw.hookimpl
def plfw_register_feature_extractors(register: Any) -> None:
    for name, params in (("st_lpips_alex", STLPIPSTrunkParams),
                         ("st_lpips_vgg", STLPIPSVGGTrunkParams),
                         ("alexnet", AlexNetParams), ("dists_vgg16", DISTSVGGParams)):
        register(name, _extractor(name), params, (params.__doc__ or "").strip())


__all__ = ["ARCHS", "INSTALL", "KIND", "OFFLINE_METRICS", "Trunk", "build_trunk", "load_layers",
           "st_layout", "stlpips_file", "torchvision_file"]

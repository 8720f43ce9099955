"""Learned perceptual metrics: ``st_lpips_alex``, ``st_lpips_vgg`` (Ghildyal & Liu, ECCV 2022;
offline: the complete networks ship inside the ``stlpips-pytorch`` wheel), ``lpips_alex``,
``lpips_vgg`` (Zhang et al., CVPR 2018, v0.1 heads from the ``lpips`` wheel) and ``dists`` (Ding
et al., TPAMI 2020, weights from the ``DISTS_pytorch`` wheel). The last three run on
torchvision's ImageNet AlexNet / VGG16, which come from the torch hub cache, a
``plfw_resolve_weights`` plugin, a ``weights`` file or a download. All are distances: lower is
better. Their networks are the loss networks of :mod:`plfw_builtins.loss_networks.trunks`.

Architecture facts used (from the papers and the weight files): LPIPS normalises each tapped
feature map to unit length over channels, squares the difference, weights channels with a
non-negative 1x1 head, averages over space and sums over five taps; its input scaling equals
ImageNet's mean/std normalisation. DISTS taps the input and five stages and compares
per-channel global means (structure of texture) and variances/covariances with learned weights:
``1 - sum(alpha * S1 + beta * S2)``.

Full-size images are scored in tiles (``tile`` pixels a side, each read with a margin wider than
the network's receptive field, aligned to its largest stride), so memory is bounded by one tile
and the result equals the whole-image value up to float rounding: every spatial mean (LPIPS) and
every moment (DISTS, accumulated in float64) is summed over exactly the positions the whole image
has. Like ``psnr_y``, both images are first quantised to 8 bits, so a model's score equals the
score of its saved output, and ``border`` pixels (the scale, in ``plfw eval`` and training) are
cut from each side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

import plfw
from plfw import (
    Packaged,
    Registry,
    UserError,
    freeze,
    read_weights,
)
from plfw_builtins.loss_networks.trunks import (
    ARCHS,
    INSTALL,
    KIND,
    OFFLINE_METRICS,
    Trunk,
    build_trunk,
    st_layout,
    stlpips_file,
)

EPS = 1e-10  # LPIPS's unit-normalisation guard


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
    #: channels-last convolutions (the metric owns its network; losses are not affected):
    #: faster on CPU, same values to float rounding (benchmarks/metric_speed.py measures it)
    channels_last = True

    def __init__(self, border: int, tile: int, trunk: nn.Module) -> None:
        trunk.to(memory_format=torch.channels_last)
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
                    pair = spec.convert(pair)
                    if self.channels_last:
                        pair = pair.contiguous(memory_format=torch.channels_last)
                    for tap, f in trunk.iter_taps(pair):
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
        super().__init__(border, tile, net.trunk)

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
        super().__init__(border, tile, trunk)

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
            _, heads = st_layout(read_weights(path, where), path, where)
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


__all__ = ["NETWORKS", "DISTSMetric", "LPIPSMetric", "LPIPSNet", "lpips_net"]

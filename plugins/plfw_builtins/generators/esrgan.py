"""Generators whose checkpoints the SR ecosystem already has: ESRGAN's RRDB network
(``rrdbnet``, the generator of ESRGAN and Real-ESRGAN) and BasicSR's modified SRResNet
(``msrresnet``).

Module and parameter names follow BasicSR's (``conv_first``, ``body.N.rdb1.conv1``,
``conv_body``, ``conv_up1``, ``conv_hr``, ``conv_last``; ``upconv1`` for MSRResNet), so a
BasicSR or Real-ESRGAN file loads with ``load_state_dict`` as it is and fine-tunes without
conversion. Files in the two older ESRGAN namings (``model.0.weight`` ... from the first ESRGAN
code, ``RRDB_trunk.N.RDB1`` ... from the ESRGAN repository) are renamed to BasicSR's on load by
:func:`rrdb_keys_to_basicsr`; the tensors are the same, only their names change.

Both factories carry ``from_state_dict``: given a plain state dict, it returns the generator
spec (architecture and scale read from the tensor names and shapes) and the state dict in this
module's naming, or None when the keys are not its architecture. :mod:`plfw.inference.generators`
asks every registered generator factory that has one; third-party generators can offer the same.

Maths, as in the originals: dense blocks of five 3x3 convolutions (LeakyReLU 0.2, each seeing
all earlier outputs), residuals scaled by 0.2 inside and around each RRDB, a long skip over the
trunk, nearest-neighbour x2 upsampling each followed by a convolution; for x2 and x1 the input
is first pixel-unshuffled (by 2 or 4) so the trunk still upsamples x4, as BasicSR does for
Real-ESRGAN's x2 model. MSRResNet: residual blocks without batch norm (conv-ReLU-conv),
LeakyReLU 0.1 elsewhere, sub-pixel upsampling, plus a bilinear upscale of the input as a long
skip. Outputs are RGB in [0, 1] (the originals' range).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import plfw
from plfw import Register, UserError

State = dict[str, torch.Tensor]


def _scaled_kaiming(*modules: nn.Module, factor: float = 0.1) -> None:
    """Kaiming-normal weights times ``factor``, zero biases: the originals' initialisation for
    residual branches, so a fresh network starts close to its skip connections."""
    with torch.no_grad():
        for module in modules:
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight)
                    m.weight.mul_(factor)
                    if m.bias is not None:
                        m.bias.zero_()


def _check_range(where: str, output_range: tuple[float, float]) -> tuple[float, float]:
    if len(output_range) != 2 or not output_range[0] < output_range[1]:
        raise UserError(f"{where}: output_range must be [low, high] with low < high, "
                        f"got {list(output_range)}")
    return float(output_range[0]), float(output_range[1])


# ---------------------------------------------------------------------------------- rrdbnet
class DenseBlock(nn.Module):
    """Five 3x3 convolutions, each fed the block input and every earlier output; the last one's
    output, times ``res_scale``, is added to the input."""

    def __init__(self, feat: int, grow: int, res_scale: float) -> None:
        super().__init__()
        self.res_scale = res_scale
        for i in range(1, 5):
            setattr(self, f"conv{i}", nn.Conv2d(feat + (i - 1) * grow, grow, 3, 1, 1))
        self.conv5 = nn.Conv2d(feat + 4 * grow, feat, 3, 1, 1)
        _scaled_kaiming(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen = [x]
        for i in range(1, 5):
            conv = getattr(self, f"conv{i}")
            seen.append(F.leaky_relu(conv(torch.cat(seen, 1)), 0.2))
        return self.conv5(torch.cat(seen, 1)) * self.res_scale + x


class RRDB(nn.Module):
    """Residual in residual dense block: three dense blocks, their result scaled and added."""

    def __init__(self, feat: int, grow: int, res_scale: float) -> None:
        super().__init__()
        self.res_scale = res_scale
        self.rdb1 = DenseBlock(feat, grow, res_scale)
        self.rdb2 = DenseBlock(feat, grow, res_scale)
        self.rdb3 = DenseBlock(feat, grow, res_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * self.res_scale + x


RRDB_SCALES = (1, 2, 4, 8)


class RRDBNet(nn.Module):
    """ESRGAN's generator (Wang et al. 2018): LR RGB in [0, 1] -> SR in ``output_range``.

    ``pixel_unshuffle`` (x1 and x2 only) selects BasicSR's layout: the input is folded into
    4x / 16x the channels and the trunk upsamples x4 (Real-ESRGAN's x2 files). Without it, x2
    has one upsampling stage (the first ESRGAN code's x2 files). x8 has three stages.
    """

    def __init__(self, scale: int = 4, num_in_ch: int = 3, num_out_ch: int = 3,
                 num_feat: int = 64, num_block: int = 23, num_grow_ch: int = 32,
                 res_scale: float = 0.2, pixel_unshuffle: bool = True,
                 output_range: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__()
        where = "generator 'rrdbnet'"
        if scale not in RRDB_SCALES:
            raise UserError(f"{where}: scale must be 1, 2, 4 or 8, got {scale!r}")
        if min(num_in_ch, num_out_ch, num_feat, num_block, num_grow_ch) < 1:
            raise UserError(f"{where}: channel and block counts must be >= 1")
        self.scale = scale
        self.output_range = _check_range(where, output_range)
        self.unshuffle = 4 // scale if (scale < 4 and pixel_unshuffle) else 1
        stages = 2 if self.unshuffle > 1 else int(math.log2(scale))
        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle ** 2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch, res_scale)
                                    for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.stages = stages
        for i in range(1, stages + 1):
            setattr(self, f"conv_up{i}", nn.Conv2d(num_feat, num_feat, 3, 1, 1))
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        u = self.unshuffle
        if u > 1:
            # Pad to a multiple of the fold, mirrored like Real-ESRGAN's own inference, and crop
            # the padding's share of the output afterwards. Always padded (often by 0) so an
            # exported graph keeps dynamic sizes; inputs under 4 px are edge-replicated.
            mode = "reflect" if min(h, w) >= 4 else "replicate"
            x = F.pixel_unshuffle(F.pad(x, (0, -w % u, 0, -h % u), mode=mode), u)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for i in range(1, self.stages + 1):
            up = F.interpolate(feat, scale_factor=2, mode="nearest")
            feat = F.leaky_relu(getattr(self, f"conv_up{i}")(up), 0.2)
        out = self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))
        return out[..., :h * self.scale, :w * self.scale] if u > 1 else out


def rrdb_keys_to_basicsr(state: State) -> State | None:
    """Rename an RRDB state dict from either older ESRGAN naming to BasicSR's; None if it is
    not an RRDB network in any of the three. The tensors themselves are not touched.

    - BasicSR / Real-ESRGAN: ``conv_first``, ``body.N.rdbK.convJ``, ``conv_body``,
      ``conv_upI``, ``conv_hr``, ``conv_last`` (returned as is).
    - ESRGAN repository, BSRGAN: ``RRDB_trunk.N.RDBK.convJ``, ``trunk_conv``, ``upconvI``,
      ``HRconv``, with ``conv_first`` / ``conv_last`` as in BasicSR.
    - the first ESRGAN code: one ``model`` sequence: ``model.0`` first conv, ``model.1.sub.N``
      the RRDBs (``RDBK.convJ.0``) and at index num_block the trunk conv, then per x2 stage an
      upsample, a conv and an activation, then the HR conv, an activation and the last conv.
    """
    if "conv_first.weight" in state and "body.0.rdb1.conv1.weight" in state:
        return dict(state)
    if "conv_first.weight" in state and "RRDB_trunk.0.RDB1.conv1.weight" in state:
        renames = [(r"^RRDB_trunk\.(\d+)\.RDB(\d)\.", r"body.\1.rdb\2."),
                   (r"^trunk_conv\.", "conv_body."), (r"^upconv(\d)\.", r"conv_up\1."),
                   (r"^HRconv\.", "conv_hr.")]
        out = {}
        for key, value in state.items():
            for pattern, repl in renames:
                key = re.sub(pattern, repl, key)
            out[key] = value
        return out
    if "model.0.weight" in state and "model.1.sub.0.RDB1.conv1.0.weight" in state:
        if any(".conv1x1." in k for k in state):
            return None  # ESRGAN+ (extra 1x1 convs): another architecture
        blocks = {int(m.group(1)) for k in state
                  if (m := re.match(r"model\.1\.sub\.(\d+)\.RDB", k))}
        trunk = max(blocks) + 1
        out = {}
        tail: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            if m := re.match(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$", key):
                out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = value
            elif m := re.match(r"model\.1\.sub\.(\d+)\.(weight|bias)$", key):
                if int(m[1]) != trunk:
                    return None
                out[f"conv_body.{m[2]}"] = value
            elif m := re.match(r"model\.(\d+)\.(weight|bias)$", key):
                tail.setdefault(int(m[1]), {})[m[2]] = value
            else:
                return None
        if 0 not in tail or len(tail) < 3:
            return None
        first, *rest = sorted(tail)
        names = [f"conv_up{i}" for i in range(1, len(rest) - 1)] + ["conv_hr", "conv_last"]
        for index, name in zip([first, *rest], ["conv_first", *names], strict=True):
            for kind, value in tail[index].items():
                out[f"{name}.{kind}"] = value
        return out
    return None


def _conv_weight(state: State, key: str, arch: str) -> torch.Tensor:
    """``state[key]``, which the architecture's names make a convolution weight: a 4-D tensor
    with elements, or a one-line error (its shapes are what the spec is read from)."""
    value = state[key]
    if not isinstance(value, torch.Tensor) or value.dim() != 4 or value.numel() == 0:
        shape = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise UserError(f"'{key}' has shape {shape}, but in an {arch} state dict it is a "
                        f"convolution weight (4-D, not empty): the file is damaged")
    return value


def rrdbnet_from_state_dict(state: State) -> tuple[dict[str, Any], State] | None:
    """(spec, state in BasicSR naming) for an RRDB state dict in any known naming, else None.
    Keys of this architecture with shapes no RRDB network has are a one-line UserError."""
    state = rrdb_keys_to_basicsr(state)  # type: ignore[assignment]
    if state is None or "conv_last.weight" not in state or "conv_body.weight" not in state:
        return None
    first, last = (_conv_weight(state, k, "RRDB") for k in ("conv_first.weight",
                                                              "conv_last.weight"))
    _conv_weight(state, "body.0.rdb1.conv1.weight", "RRDB")
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.rdb1\.", k))}
    stages = sum(1 for k in state if re.fullmatch(r"conv_up\d+\.weight", k))
    out_ch, folded = int(last.shape[0]), int(first.shape[1])
    fold = round(math.sqrt(folded / out_ch)) if folded % out_ch == 0 else 0
    if fold not in (1, 2, 4) or fold * fold * out_ch != folded:
        return None
    scale = 2 ** stages // fold
    if scale not in RRDB_SCALES or (fold > 1 and stages != 2):
        return None
    spec = {"name": "rrdbnet", "scale": scale, "num_in_ch": out_ch, "num_out_ch": out_ch,
            "num_feat": int(first.shape[0]), "num_block": len(blocks),
            "num_grow_ch": int(state["body.0.rdb1.conv1.weight"].shape[0]),
            "pixel_unshuffle": fold > 1 or scale not in (1, 2)}
    return spec, state


# -------------------------------------------------------------------------------- msrresnet
class PlainResidual(nn.Module):
    """conv-ReLU-conv with an identity skip, no batch norm (EDSR-style)."""

    def __init__(self, feat: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(feat, feat, 3, 1, 1)
        _scaled_kaiming(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


MSR_SCALES = (2, 3, 4)


class MSRResNet(nn.Module):
    """BasicSR's modified SRResNet: no batch norm, LeakyReLU 0.1, sub-pixel upsampling (one x2
    or x3 stage, two x2 stages for x4) and a bilinear upscale of the input added at the end."""

    def __init__(self, scale: int = 4, num_in_ch: int = 3, num_out_ch: int = 3,
                 num_feat: int = 64, num_block: int = 16,
                 output_range: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__()
        where = "generator 'msrresnet'"
        if scale not in MSR_SCALES:
            raise UserError(f"{where}: scale must be 2, 3 or 4, got {scale!r}")
        if min(num_in_ch, num_out_ch, num_feat, num_block) < 1:
            raise UserError(f"{where}: channel and block counts must be >= 1")
        if num_in_ch != num_out_ch:
            raise UserError(f"{where}: the bilinear skip needs num_in_ch == num_out_ch")
        self.scale = scale
        self.output_range = _check_range(where, output_range)
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(PlainResidual(num_feat) for _ in range(num_block)))
        factor = 2 if scale == 4 else scale
        self.upconv1 = nn.Conv2d(num_feat, num_feat * factor * factor, 3, 1, 1)
        if scale == 4:
            self.upconv2 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
        self.factor = factor
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        _scaled_kaiming(self.conv_first, self.upconv1, self.conv_hr, self.conv_last)
        if scale == 4:
            _scaled_kaiming(self.upconv2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(F.leaky_relu(self.conv_first(x), 0.1))
        out = F.leaky_relu(F.pixel_shuffle(self.upconv1(out), self.factor), 0.1)
        if self.scale == 4:
            out = F.leaky_relu(F.pixel_shuffle(self.upconv2(out), 2), 0.1)
        out = self.conv_last(F.leaky_relu(self.conv_hr(out), 0.1))
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return out + base


def msrresnet_from_state_dict(state: State) -> tuple[dict[str, Any], State] | None:
    """(spec, state) for a BasicSR MSRResNet state dict, else None (a one-line UserError for
    its keys with shapes no MSRResNet has)."""
    need = ("conv_first.weight", "body.0.conv1.weight", "upconv1.weight", "conv_hr.weight",
            "conv_last.weight")
    if not all(k in state for k in need) or "conv_body.weight" in state:
        return None
    for key in ("conv_first.weight", "upconv1.weight", "conv_last.weight"):
        _conv_weight(state, key, "MSRResNet")
    feat = int(state["conv_first.weight"].shape[0])
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.conv1\.", k))}
    if "upconv2.weight" in state:
        scale = 4
    else:
        ratio = int(state["upconv1.weight"].shape[0]) // feat
        scale = {4: 2, 9: 3}.get(ratio, 0)
        if not scale:
            return None
    spec = {"name": "msrresnet", "scale": scale,
            "num_in_ch": int(state["conv_first.weight"].shape[1]),
            "num_out_ch": int(state["conv_last.weight"].shape[0]), "num_feat": feat,
            "num_block": len(blocks)}
    return spec, dict(state)


# ------------------------------------------------------------------------------ registration
@dataclass
class RRDBNetParams:
    scale: int = 4
    num_in_ch: int = 3
    num_out_ch: int = 3
    num_feat: int = 64
    num_block: int = 23
    num_grow_ch: int = 32
    res_scale: float = 0.2
    pixel_unshuffle: bool = True
    output_range: list[float] = field(default_factory=lambda: [0.0, 1.0])


@dataclass
class MSRResNetParams:
    scale: int = 4
    num_in_ch: int = 3
    num_out_ch: int = 3
    num_feat: int = 64
    num_block: int = 16
    output_range: list[float] = field(default_factory=lambda: [0.0, 1.0])


def build_rrdbnet(p: RRDBNetParams) -> RRDBNet:
    return RRDBNet(p.scale, p.num_in_ch, p.num_out_ch, p.num_feat, p.num_block, p.num_grow_ch,
                   p.res_scale, p.pixel_unshuffle, tuple(p.output_range))


def build_msrresnet(p: MSRResNetParams) -> MSRResNet:
    return MSRResNet(p.scale, p.num_in_ch, p.num_out_ch, p.num_feat, p.num_block,
                     tuple(p.output_range))


build_rrdbnet.from_state_dict = rrdbnet_from_state_dict  # type: ignore[attr-defined]
build_msrresnet.from_state_dict = msrresnet_from_state_dict  # type: ignore[attr-defined]


@plfw.hookimpl
def plfw_register_generators(register: Register) -> None:
    register("rrdbnet", build_rrdbnet, RRDBNetParams,
             "ESRGAN / Real-ESRGAN RRDB network (Wang et al. 2018), BasicSR key names")
    register("msrresnet", build_msrresnet, MSRResNetParams,
             "BasicSR's modified SRResNet (no BN, LeakyReLU, bilinear skip)")

"""Frozen generators for inference: the same function as the trained network, computed faster.

Training keeps batch norm and the paper's layer order because both matter for the gradients.
A model that only runs forward can drop what is not arithmetic on the image:

- batch norm in eval mode is an affine map per channel, folded into the convolution before it;
- a convolution after ``PixelShuffle(r)`` (SRResNet's 9x9 tail, at full output resolution with
  3 output channels: a shape CPU convolution kernels run at a fifth of their usual rate) is
  the same as a convolution *before* the shuffle, on the r^2-times-smaller grid, with r^2 times
  the channels (:func:`subpixel_conv`), which those kernels run well;
- a tiler needs the SR of a tile's core only; the context around it is there for the deep
  trunk's receptive field, so a generator may skip upsampling that margin (``keep``).

Generators opt in to rewrites of their own with a ``for_inference()`` method that returns an
equivalent module (SRResNet has one); folding batch norm applies to every generator. The result
equals the original up to float rounding (tested to 1e-4 of the output range in fp32).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from plfw.runtime import Runtime


def fold_batch_norm(module: nn.Module) -> nn.Module:
    """In place: every ``Conv2d`` directly followed by an eval-mode ``BatchNorm2d`` inside an
    ``nn.Sequential`` becomes one convolution (the batch norm an ``Identity``)."""
    for seq in module.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for first, second in zip(names, names[1:], strict=False):
            conv, norm = seq._modules[first], seq._modules[second]
            if (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
                    and not norm.training and norm.track_running_stats):
                seq._modules[first] = fuse_conv_bn_eval(conv, norm)
                seq._modules[second] = nn.Identity()
    return module


@torch.no_grad()
def subpixel_conv(conv: nn.Conv2d, factor: int) -> nn.Conv2d:
    """The convolution that, applied *before* ``PixelShuffle(factor)``, gives what ``conv``
    gives applied after it: ``shuffle(subpixel_conv(conv)(x)) == conv(shuffle(x))``.

    ``conv`` must be a stride-1, dilation-1, ungrouped convolution with an odd square kernel
    and "same" zero padding (k // 2), as SRResNet's tail is. Output pixel (r*y + a, r*x + b)
    of ``conv`` reads input offsets d in [-p, p] around it; on the small grid those are offsets
    floor((a + d) / r) of sub-position (a + d) mod r, so the new kernel is 2*ceil(p/r) + 1 wide
    and maps C*r^2 channels to O*r^2 (channel order as ``PixelShuffle`` reads it). Zero padding
    of the small grid is zero padding of the large one, so borders are exact too.
    """
    k = conv.kernel_size[0]
    if (conv.kernel_size != (k, k) or k % 2 == 0 or conv.stride != (1, 1)
            or conv.dilation != (1, 1) or conv.groups != 1 or conv.padding != (k // 2, k // 2)
            or conv.padding_mode != "zeros"):
        raise ValueError(f"subpixel_conv needs a stride-1 'same' convolution with an odd square "
                         f"kernel, got {conv}")
    r, p = factor, k // 2
    q = math.ceil(p / r)
    out_ch, in_ch = conv.out_channels, conv.in_channels
    w = conv.weight
    new = torch.zeros(out_ch, r, r, in_ch, r, r, 2 * q + 1, 2 * q + 1, dtype=w.dtype,
                      device=w.device)
    for a in range(r):
        for b in range(r):
            for dy in range(-p, p + 1):
                qy, i = divmod(a + dy, r)
                for dx in range(-p, p + 1):
                    qx, j = divmod(b + dx, r)
                    new[:, a, b, :, i, j, qy + q, qx + q] = w[:, :, dy + p, dx + p]
    small = nn.Conv2d(in_ch * r * r, out_ch * r * r, 2 * q + 1, padding=q,
                      bias=conv.bias is not None, device=w.device, dtype=w.dtype)
    small.weight.copy_(new.reshape(out_ch * r * r, in_ch * r * r, 2 * q + 1, 2 * q + 1))
    if conv.bias is not None:
        small.bias.copy_(conv.bias.repeat_interleave(r * r))
    return small


def shuffled_prelu(prelu: nn.PReLU, factor: int) -> nn.PReLU:
    """The channel-wise PReLU that, applied before ``PixelShuffle(factor)``, equals ``prelu``
    applied after it (each channel's slope repeated for its factor^2 sub-positions)."""
    weight = prelu.weight.detach()
    if weight.numel() == 1:
        return copy.deepcopy(prelu)
    moved = nn.PReLU(weight.numel() * factor * factor, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        moved.weight.copy_(weight.repeat_interleave(factor * factor))
    return moved


def inference_copy(module: nn.Module) -> nn.Module:
    """An inference-only copy of a generator: eval mode, no gradients, the generator's own
    ``for_inference()`` rewrite if it has one, batch norm folded. ``module`` is left as it was."""
    frozen = copy.deepcopy(module).eval().requires_grad_(False)
    rewrite: Callable[[], nn.Module] | None = getattr(frozen, "for_inference", None)
    if rewrite is not None:
        frozen = rewrite().eval().requires_grad_(False)
    return fold_batch_norm(frozen)


def frozen_runner(module: nn.Module, out_range: tuple[float, float],
                  rt: Runtime) -> Callable[..., torch.Tensor]:
    """LR batch (NCHW, [0, 1]) -> SR batch in [0, 1] on the CPU, computed by a frozen copy of
    ``module`` (:func:`inference_copy`) with the runtime's device, precision and memory format
    (channels_last is faster for inference on the CPU in both precisions:
    ``benchmarks/upscale.py``). ``run(lr, keep)`` returns only the SR of the LR region ``keep``
    = (top, left, height, width); generators whose frozen copy has ``accepts_keep`` compute only
    that much of their upsampling, others are cropped. For models that do not change afterwards
    (loaded files); a model still training wants :func:`plfw.generators.batch_runner`, which
    reads its current weights on every call."""
    net = inference_copy(module).to(rt.device, memory_format=rt.memory_format())
    lo, hi = out_range
    partial = bool(getattr(net, "accepts_keep", False))
    scale = int(getattr(net, "scale", 1))

    def run(lr: torch.Tensor, keep: tuple[int, int, int, int] | None = None) -> torch.Tensor:
        with torch.inference_mode(), rt.autocast():
            sr = net(rt.to(lr), keep) if partial else net(rt.to(lr))
        if keep is not None and not partial:
            top, left, height, width = (scale * v for v in keep)
            sr = sr[..., top:top + height, left:left + width]
        return ((sr.float() - lo) / (hi - lo)).clamp(0, 1).cpu()

    run.accepts_keep = True  # type: ignore[attr-defined]
    return run

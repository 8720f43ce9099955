"""Frozen generators for inference: the same function as the trained network, computed faster.

Training keeps batch norm because its statistics are learned; a model that only runs forward
can fold it (in eval mode it is an affine map per channel) into the convolution before it.
A tiler needs the SR of a tile's core only; the context around it is there for the deep
trunk's receptive field, so a generator whose ``forward(lr, keep)`` takes the region to return
(``accepts_keep``, as SRResNet's does) skips upsampling that margin. The result equals the
original up to float rounding (``tests/test_inference.py``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from plfw.device.runtime import Runtime
from plfw.inference.generators import to_unit


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


def inference_copy(module: nn.Module) -> nn.Module:
    """An inference-only copy of a generator: eval mode, no gradients, batch norm folded.
    ``module`` is left as it was."""
    return fold_batch_norm(copy.deepcopy(module).eval().requires_grad_(False))


def frozen_runner(module: nn.Module, out_range: tuple[float, float],
                  rt: Runtime) -> Callable[..., torch.Tensor]:
    """LR batch (NCHW, [0, 1]) -> SR batch in [0, 1] on the CPU, computed by a frozen copy of
    ``module`` (:func:`inference_copy`) with the runtime's device, precision and memory format
    (channels_last is faster for inference on the CPU in both precisions:
    ``benchmarks/upscale.py``). ``run(lr, keep)`` returns only the SR of the LR region ``keep``
    = (top, left, height, width); generators whose frozen copy has ``accepts_keep`` compute only
    that much of their upsampling, others are cropped. For models that do not change afterwards
    (loaded files); a model still training wants :func:`plfw.inference.generators.batch_runner`,
    which reads its current weights on every call."""
    net = inference_copy(module).to(rt.device, memory_format=rt.memory_format())
    partial = bool(getattr(net, "accepts_keep", False))
    scale = int(getattr(net, "scale", 1))

    def run(lr: torch.Tensor, keep: tuple[int, int, int, int] | None = None) -> torch.Tensor:
        with torch.inference_mode(), rt.autocast():
            sr = net(rt.to(lr), keep) if partial else net(rt.to(lr))
        if keep is not None and not partial:
            top, left, height, width = (scale * v for v in keep)
            sr = sr[..., top:top + height, left:left + width]
        return to_unit(sr.float(), out_range).cpu()

    run.accepts_keep = True  # type: ignore[attr-defined]
    return run

"""One way to open a trained generator for inference, used by every command that runs one
(``plfw eval``, ``upscale``, ``ablate``'s scoring, ``mos create --from-ablation``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from plfw.core.registry import Registry
from plfw.device.runtime import Runtime, make_runtime
from plfw.inference.frozen import frozen_runner
from plfw.inference.generators import LoadedGenerator, open_generator


@dataclass
class Model:
    """A generator opened for inference: what was loaded, the runtime it runs with, and
    ``batch(lr, keep=None)``, LR batch (NCHW, [0, 1]) -> SR batch in [0, 1] on the CPU."""

    loaded: LoadedGenerator
    rt: Runtime
    batch: Callable[..., torch.Tensor]

    @property
    def scale(self) -> int:
        return int(getattr(self.loaded.module, "scale", 4))

    def image(self, lr: torch.Tensor) -> torch.Tensor:
        """One CHW image in [0, 1] -> its SR: an evaluation method."""
        return self.batch(lr.unsqueeze(0))[0]

    def with_precision(self, precision: str) -> Model:
        """The same network run in another precision (16-bit images upscale in fp32)."""
        rt = make_runtime(str(self.rt.device), precision, "true")
        return Model(self.loaded, rt, frozen_runner(self.loaded.module, self.loaded.out_range, rt))


def open_model(source: str | Path, registry: Registry, device: str = "auto",
               precision: str = "fp32") -> Model:
    """A checkpoint, exported generator, foreign state dict or bundled model's name, frozen for
    inference (batch norm folded, channels-last) on ``device`` in ``precision``: every command
    that runs a model opens it here."""
    rt = make_runtime(device, precision, "true")
    loaded = open_generator(source, registry)
    loaded.module.to(rt.device)
    return Model(loaded, rt, frozen_runner(loaded.module, loaded.out_range, rt))

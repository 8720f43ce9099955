"""What the losses beyond the paper's share: fp32 arithmetic under autocast and images mapped to
[0, 1] from the generator's range. No components are registered here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def fp32(x: Tensor) -> torch.autocast:
    """Autocast off: the parts of a loss that need float32 (projections that get sorted,
    piq's SSIM windows) run in it whatever precision the step uses."""
    return torch.autocast(x.device.type, enabled=False)


class UnitRange(nn.Module):
    """Holds the image range set by the trainer and maps images to [0, 1]."""

    name = ""

    def __init__(self) -> None:
        super().__init__()
        self.image_range = (0.0, 1.0)

    def set_image_range(self, lo: float, hi: float) -> None:
        """Declare the range SR and HR images come in (the generator's ``output_range``)."""
        if not hi > lo:
            raise ValueError(f"image range must have hi > lo, got ({lo}, {hi})")
        self.image_range = (float(lo), float(hi))

    def unit(self, images: Tensor) -> Tensor:
        """``images`` mapped from the image range to [0, 1], in float32 (FFTs and sorting want
        it; under bf16 autocast the loss is still computed in float32)."""
        lo, hi = self.image_range
        return (images.float() - lo) / (hi - lo)

    def extra_repr(self) -> str:
        return f"image_range={self.image_range}"


__all__ = ["UnitRange", "fp32"]

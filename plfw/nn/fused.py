"""PReLU compiled on its own for training: the same function, a fraction of torch's CPU time.

torch's CPU kernel for PReLU's backward is slow: on SRResNet's last sub-pixel stage (bf16,
channels_last, 16x256x48x48) it takes 38 ms against 6 ms for the forward, and the 19 PReLUs
take a sixth of the bf16 MSE step (docs/bench.md). ``torch.compile`` of PReLU alone
(``where(x > 0, x, w * x)``) fuses the backward into one pass over the input and the gradient:
5-6 ms there. Compiling only this small function keeps inductor's warm-up to seconds, where a
whole compiled model costs minutes on a few CPU cores without speeding its convolutions up.

The compiled path runs only inside :func:`compiled_activations` (the training step turns it on)
and only when a gradient is wanted; evaluation, inference and export run torch's own PReLU.
If inductor cannot compile (no C++ compiler, say), a warning names the cause once and every
later call runs torch's PReLU.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plfw.core.errors import PlfwWarning


class CompileFallback(PlfwWarning, RuntimeWarning):
    """torch.compile failed; the eager function runs instead (said once, as one line)."""


_enabled = False
#: the compiled function; None before the first call, False once compiling failed
_compiled: Callable[[Tensor, Tensor], Tensor] | bool | None = None


def _prelu(x: Tensor, weight: Tensor) -> Tensor:
    """PReLU written for inductor. The slope takes the input's dtype, as autocast gives
    ``F.prelu`` a bf16 weight for a bf16 input."""
    shape = [1] * x.dim()
    if x.dim() > 1:
        shape[1] = -1
    return torch.where(x > 0, x, x * weight.to(x.dtype).view(shape))


@contextlib.contextmanager
def compiled_activations(enabled: bool = True) -> Iterator[None]:
    """Within this block :func:`prelu` runs compiled where a gradient is wanted."""
    global _enabled
    previous, _enabled = _enabled, enabled
    try:
        yield
    finally:
        _enabled = previous


def prelu(x: Tensor, weight: Tensor) -> Tensor:
    """``F.prelu(x, weight)``; compiled inside :func:`compiled_activations` when it needs a
    gradient (one graph for all shapes; one per dtype, layout and autocast state)."""
    global _compiled
    if not (_enabled and _compiled is not False and torch.is_grad_enabled()
            and (x.requires_grad or weight.requires_grad)):
        return F.prelu(x, weight)
    if _compiled is None:
        _compiled = torch.compile(_prelu, dynamic=True)
    kind = x.device.type
    if torch.is_autocast_enabled(kind):  # autocast runs F.prelu in its low precision
        x = x.to(torch.get_autocast_dtype(kind))
    try:
        return _compiled(x, weight)  # type: ignore[operator]
    except Exception as e:  # noqa: BLE001 - any compiler failure: fall back, say why once
        _compiled = False
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        warnings.warn(f"compiled PReLU unavailable, using torch's ({first[:200]}); set "
                      "train.compile=false to skip the attempt", CompileFallback, stacklevel=2)
        return F.prelu(x, weight)


class PReLU(nn.PReLU):
    """``nn.PReLU`` (same parameter, state-dict key and init) through :func:`prelu`."""

    def forward(self, x: Tensor) -> Tensor:
        return prelu(x, self.weight)

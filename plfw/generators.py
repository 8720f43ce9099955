"""Loading a trained generator from whatever a user points at.

Accepted: a plfw training checkpoint (its config names the generator), an exported
``models/<phase>.pt`` (spec + weights), a plain ``state_dict`` of the built-in ``srresnet``
(architecture inferred from the tensor shapes), or the name of a model bundled with plfw.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import plfw
from plfw.checkpoint import FORMAT as CHECKPOINT_FORMAT
from plfw.checkpoint import safe_load
from plfw.errors import UserError
from plfw.runtime import Runtime, eval_mode

GENERATOR_FORMAT = "plfw-generator-1"
BUNDLED_DIR = Path(__file__).parent / "weights"


def to_unit(x: torch.Tensor, out_range: tuple[float, float]) -> torch.Tensor:
    """Map a generator output from its range to [0, 1], clamped."""
    lo, hi = out_range
    return ((x - lo) / (hi - lo)).clamp(0, 1)


def batch_runner(module: nn.Module, out_range: tuple[float, float],
                 rt: Runtime) -> Callable[[torch.Tensor], torch.Tensor]:
    """LR batch (NCHW, [0, 1]) -> SR batch in [0, 1] on the CPU, in eval mode, with the
    runtime's device, precision and memory format."""

    def run(lr: torch.Tensor) -> torch.Tensor:
        with eval_mode(module), rt.autocast():
            sr = module(rt.to(lr))
        return to_unit(sr.float(), out_range).cpu()

    return run


def bundled_models() -> dict[str, Path]:
    return {p.stem: p for p in sorted(BUNDLED_DIR.glob("*.pt"))} if BUNDLED_DIR.is_dir() else {}


def infer_srresnet(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Rebuild srresnet params from a plain state dict (blocks, channels, scale, batch norm)."""
    keys = list(state)
    blocks = {int(m.group(1)) for k in keys if (m := re.match(r"blocks\.(\d+)\.", k))}
    first = next((v for k, v in state.items() if v.dim() == 4 and v.shape[1] == 3), None)
    upsample_convs = [v for k, v in state.items() if k.startswith("upsample.") and v.dim() == 4]
    if not blocks or first is None or not upsample_convs:
        raise UserError("a plain state dict must come from plfw's srresnet generator "
                        "(expected keys like 'blocks.0....'); pass a plfw checkpoint instead")
    scale = 2 ** len(upsample_convs)  # one sub-pixel x2 stage per upsampling convolution
    return {"name": "srresnet", "blocks": len(blocks), "channels": int(first.shape[0]),
            "scale": scale, "batch_norm": any("running_mean" in k for k in keys)}


def _build(spec: dict[str, Any], weights: dict[str, torch.Tensor], source: str) -> nn.Module:
    module = plfw.build("generator", spec, f"generator in {source}")
    try:
        module.load_state_dict(weights)
    except RuntimeError as exc:
        raise UserError(f"{source}: weights do not fit generator {spec.get('name')} "
                        f"({str(exc).splitlines()[0][:160]})") from None
    return module.eval()


def load_generator(source: str | Path) -> tuple[nn.Module, tuple[float, float]]:
    """(generator in eval mode, its output range) from a file or a bundled model's name."""
    bundled = bundled_models()
    path = bundled[str(source)] if str(source) in bundled else Path(source)
    if not path.exists():
        names = ", ".join(bundled) or "none installed"
        raise UserError(f"model not found: {source} (give a checkpoint file, an exported "
                        f"models/<phase>.pt, or a bundled model name: {names})")
    state = safe_load(path)
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a checkpoint or a state dict")
    fmt = state.get("format")
    if fmt == GENERATOR_FORMAT:
        module = _build(state["generator"], state["state_dict"], str(path))
    elif fmt == CHECKPOINT_FORMAT:
        cfg = state["config"]
        spec = dict(cfg["generator"]) if isinstance(cfg["generator"], dict) else {
            "name": cfg["generator"]}
        spec.setdefault("scale", cfg.get("scale", 4))
        weights = state["ema"] if state.get("ema") is not None else state["generator"]
        module = _build(spec, weights, str(path))
    elif all(isinstance(v, torch.Tensor) for v in state.values()):
        module = _build(infer_srresnet(state), state, str(path))
    else:
        raise UserError(f"{path}: not a plfw checkpoint, exported generator or state dict")
    out_range = tuple(getattr(module, "output_range", (0.0, 1.0)))
    if not all(math.isfinite(v) for v in out_range):
        raise UserError(f"{path}: generator has an invalid output range {out_range}")
    return module, out_range  # type: ignore[return-value]

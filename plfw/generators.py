"""Loading a trained generator from whatever a user points at.

Accepted, as ``.pt`` / ``.pth`` (read with ``weights_only``: no pickled objects) or
``.safetensors``:

- a plfw training checkpoint (its config names the generator) or an exported
  ``models/<phase>.pt`` (spec + weights), or a ``plfw export`` safetensors file (spec in its
  metadata), or the name of a model bundled with plfw;
- a plain state dict, bare or inside BasicSR's ``{"params_ema": ...}`` / ``{"params": ...}``
  wrapper (``params_ema`` preferred: it is the averaged generator BasicSR evaluates). The
  architecture and scale are read from the keys: every registered generator factory with a
  ``from_state_dict(state) -> (spec, state) | None`` attribute is asked (``rrdbnet`` and
  ``msrresnet`` have one), then plfw's own ``srresnet``; then, if the optional ``spandrel``
  package is installed, any architecture it recognises (SwinIR, HAT, Real-ESRGAN Compact, ...).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from plfw.checkpoint import FORMAT as CHECKPOINT_FORMAT
from plfw.checkpoint import safe_load
from plfw.errors import UserError
from plfw.plugins import get_plugins
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


def runner(module: nn.Module, out_range: tuple[float, float],
           rt: Runtime) -> Callable[[torch.Tensor], torch.Tensor]:
    """A generator as an evaluation method on single images (CHW in [0, 1] -> SR in [0, 1])."""
    batch = batch_runner(module, out_range, rt)
    return lambda lr: batch(lr.unsqueeze(0))[0]


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
    module = get_plugins().registry.build("generator", spec, f"generator in {source}")
    try:
        module.load_state_dict(weights)
    except RuntimeError as exc:
        raise UserError(f"{source}: weights do not fit generator {spec.get('name')} "
                        f"({str(exc).splitlines()[0][:160]})") from None
    return module.eval()


@dataclass
class LoadedGenerator:
    """A generator ready for inference plus what is known about where it came from."""

    module: nn.Module
    out_range: tuple[float, float]
    spec: dict[str, Any] | None  # plfw generator spec (None for a spandrel architecture)
    path: Path
    how: str  # "plfw", "state dict (rrdbnet)", "spandrel (ESRGAN)", ...


class SpandrelGenerator(nn.Module):
    """A model spandrel recognised, as a plfw generator: [0, 1] RGB in, [0, 1] out.

    Calls go through spandrel's descriptor, which pads inputs to the sizes the architecture
    needs and crops the result; architectures spandrel marks as unsafe in bf16 run in fp32."""

    def __init__(self, descriptor: Any) -> None:
        super().__init__()
        self.descriptor = descriptor
        self.model = descriptor.model
        self.scale = int(descriptor.scale)
        self.output_range = (0.0, 1.0)
        self.architecture = str(descriptor.architecture.name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not getattr(self.descriptor, "supports_bfloat16", False):
            with torch.autocast(x.device.type, enabled=False):
                return self.descriptor(x.float())
        return self.descriptor(x)


WRAPPERS = ("params_ema", "params", "state_dict")


def _unwrap_state(state: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The tensor dict inside BasicSR-style wrappers, without DataParallel's 'module.'."""
    where = ""
    for key in WRAPPERS:
        inner = state.get(key)
        if isinstance(inner, dict) and inner:
            state, where = inner, f"['{key}']"
            break
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, where


def _read(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(contents, safetensors metadata) of a weights file, never executing code from it."""
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors import safe_open
            from safetensors.torch import load_file
        except ImportError:
            raise UserError(f"{path}: reading .safetensors needs the safetensors package "
                            f"(pip install safetensors)") from None
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = dict(f.metadata() or {})
            return load_file(str(path)), metadata
        except Exception as exc:
            raise UserError(f"{path}: not a readable safetensors file ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:120] if str(exc) else ''})") from None
    state = safe_load(path)
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a checkpoint or a state dict, found "
                        f"{type(state).__name__}")
    return state, {}


def _recognise(state: dict[str, torch.Tensor], path: Path) -> LoadedGenerator:
    """Architecture and weights from a plain state dict, trying each loader in turn."""
    tried = []
    for name in get_plugins().registry.names("generator"):
        try:
            factory = get_plugins().registry.get("generator", name).factory
        except UserError:
            continue
        recognise = getattr(factory, "from_state_dict", None)
        if recognise is None:
            continue
        tried.append(name)
        found = recognise(state)
        if found is not None:
            spec, weights = found
            return LoadedGenerator(_build(spec, weights, str(path)), (0.0, 1.0), spec, path,
                                   f"state dict ({name})")
    tried.append("srresnet")
    if any(re.match(r"blocks\.\d+\.", k) for k in state):
        spec = infer_srresnet(state)
        return LoadedGenerator(_build(spec, state, str(path)), (0.0, 1.0), spec, path,
                               "state dict (srresnet)")
    try:
        import spandrel
    except ImportError:
        tried.append("spandrel (not installed: pip install 'plfw[spandrel]')")
    else:
        try:
            descriptor = spandrel.ModelLoader().load_from_state_dict(state)
        except Exception as exc:  # unknown architecture or a mismatch inside spandrel
            detail = (str(exc).splitlines() or [type(exc).__name__])[0][:80]
            tried.append(f"spandrel {spandrel.__version__} ({detail})")
        else:
            if not isinstance(descriptor, spandrel.ImageModelDescriptor):
                tried.append(f"spandrel ({descriptor.architecture.name} is not an image model)")
            elif (descriptor.input_channels, descriptor.output_channels) != (3, 3):
                tried.append(f"spandrel ({descriptor.architecture.name} has "
                             f"{descriptor.input_channels}->{descriptor.output_channels} "
                             f"channels, plfw needs RGB->RGB)")
            else:
                module = SpandrelGenerator(descriptor.eval())
                return LoadedGenerator(module, (0.0, 1.0), None, path,
                                       f"spandrel ({module.architecture})")
    sample = ", ".join(list(state)[:3])
    raise UserError(f"{path}: no loader recognises these weights (keys {sample}, ...; tried "
                    f"{', '.join(tried)})")


def open_generator(source: str | Path) -> LoadedGenerator:
    """Like :func:`load_generator`, keeping the spec and a word on how the file was read."""
    bundled = bundled_models()
    path = bundled[str(source)] if str(source) in bundled else Path(source)
    if not path.exists():
        names = ", ".join(bundled) or "none installed"
        raise UserError(f"model not found: {source} (give a checkpoint file, an exported "
                        f"models/<phase>.pt, a .pth / .safetensors state dict, or a bundled "
                        f"model name: {names})")
    state, metadata = _read(path)
    fmt = state.get("format") if isinstance(state.get("format"), str) else metadata.get("format")
    if fmt == GENERATOR_FORMAT and metadata:
        try:
            spec = json.loads(metadata["generator"])
        except (KeyError, ValueError):
            raise UserError(f"{path}: plfw safetensors file without a valid generator "
                            f"spec in its metadata") from None
        loaded = LoadedGenerator(_build(spec, state, str(path)), (0.0, 1.0), spec, path, "plfw")
    elif fmt == GENERATOR_FORMAT:
        spec = dict(state["generator"])
        loaded = LoadedGenerator(_build(spec, state["state_dict"], str(path)), (0.0, 1.0),
                                 spec, path, "plfw")
    elif fmt == CHECKPOINT_FORMAT:
        cfg = state["config"]
        spec = dict(cfg["generator"]) if isinstance(cfg["generator"], dict) else {
            "name": cfg["generator"]}
        spec.setdefault("scale", cfg.get("scale", 4))
        weights = state["ema"] if state.get("ema") is not None else state["generator"]
        loaded = LoadedGenerator(_build(spec, weights, str(path)), (0.0, 1.0), spec, path,
                                 "plfw checkpoint")
    else:
        tensors, where = _unwrap_state(state)
        if not tensors or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
            keys = ", ".join(map(str, list(state)[:5]))
            raise UserError(f"{path}: not a plfw checkpoint, exported generator or state dict "
                            f"of tensors (top-level keys: {keys}; looked inside "
                            f"{', '.join(WRAPPERS)})")
        loaded = _recognise(tensors, path)
        if where:
            loaded.how += f" from {where}"
    out_range = tuple(getattr(loaded.module, "output_range", (0.0, 1.0)))
    if len(out_range) != 2 or not all(math.isfinite(v) for v in out_range):
        raise UserError(f"{path}: generator has an invalid output range {out_range}")
    loaded.out_range = out_range  # type: ignore[assignment]
    return loaded


def load_generator(source: str | Path) -> tuple[nn.Module, tuple[float, float]]:
    """(generator in eval mode, its output range) from a file or a bundled model's name."""
    loaded = open_generator(source)
    return loaded.module, loaded.out_range

"""Loading a trained generator from whatever a user points at.

Accepted, as ``.pt`` / ``.pth`` (read with ``weights_only``: no pickled objects) or
``.safetensors``:

- a plfw training checkpoint (its config names the generator) or an exported
  ``models/<phase>.pt`` (spec + weights), or a ``plfw export`` safetensors file (spec in its
  metadata), or the name of a model bundled with plfw;
- a plain state dict, bare or inside BasicSR's ``{"params_ema": ...}`` / ``{"params": ...}``
  wrapper (``params_ema`` preferred: it is the averaged generator BasicSR evaluates). The
  architecture and scale are read from the keys: every registered generator factory with a
  ``from_state_dict(state) -> (spec, state) | None`` attribute (the contract in
  :mod:`plfw.core.hookspecs`; ``srresnet``, ``rrdbnet`` and ``msrresnet`` have one) is asked in name
  order; then, if the optional ``spandrel`` package is installed, any architecture it
  recognises (SwinIR, HAT, Real-ESRGAN Compact, ...).

Every function that builds takes the :class:`plfw.core.registry.Registry` to build with.

Nothing is allocated for a network before its weights are known to fill it: the spec (from the
file, or read from tensor shapes) is built on the ``meta`` device and every tensor name and
shape of the file is checked against it; zero-element tensors are refused; and every build
(spandrel's too) stops once it creates far more tensors or elements than the file holds. A
200-byte file whose spec asks for a 154 GB network is one line, not an allocation.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from plfw.core.errors import UserError
from plfw.core.registry import Registry
from plfw.device.runtime import Runtime, eval_mode
from plfw.storage.checkpoint import FORMAT as CHECKPOINT_FORMAT
from plfw.storage.checkpoint import safe_load

GENERATOR_FORMAT = "plfw-generator-1"
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "weights"  # plfw/weights


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


#: Tensor factories whose first argument is the size of the tensor they allocate.
_SIZED_FACTORIES = (torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn,
                    torch.empty_strided)


class _TooBig(Exception):
    """A build asked for more tensors or elements than its weights file could fill."""


class _Budget(TorchFunctionMode):
    """Stops a network build before an allocation once the tensors it creates exceed what the
    weights could fill: ``4 x`` the file's tensor count (+ 256) or element count (+ ``slack``
    for buffers and temporaries: 2^20 on the meta device, where a stop is only quicker, 2^24 =
    64 MB of float32 for a real build). A spec or tensor shapes asking for a 154 GB network from
    a 200-byte file stop here instead of in the allocator."""

    def __init__(self, weights: dict[str, torch.Tensor], slack: int = 1 << 24) -> None:
        super().__init__()
        self.max_tensors = 4 * len(weights) + 256
        self.max_elements = 4 * _present(weights) + slack
        self.tensors = self.elements = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in _SIZED_FACTORIES:
            size = kwargs.get("size", args[0] if args else ())
            if not isinstance(size, list | tuple | torch.Size):
                size = [a for a in args if isinstance(a, int)]
            self.tensors += 1
            self.elements += math.prod(int(n) for n in size)
            if self.tensors > self.max_tensors or self.elements > self.max_elements:
                raise _TooBig
        return func(*args, **kwargs)


def _present(weights: dict[str, torch.Tensor]) -> int:
    """Values the file really holds: the elements of its distinct storages, not the tensors'
    ``numel`` (a tensor expanded with stride 0 claims any shape from one stored value)."""
    storages: dict[int, int] = {}
    for v in weights.values():
        storage = v.untyped_storage()
        storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0),
                                           storage.nbytes() // max(v.element_size(), 1))
    return sum(storages.values())


def _fit_error(exc: RuntimeError) -> str:
    """The first size mismatch of a ``load_state_dict`` error, on one line."""
    lines = [" ".join(line.split()) for line in str(exc).splitlines()[1:] if line.strip()]
    more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
    return (lines[0][:200] + more) if lines else " ".join(str(exc).split())[:200]


def _check_tensors(weights: Any, source: str) -> dict[str, torch.Tensor]:
    """``weights`` as a state dict of tensors, none of them empty (a zero-element tensor costs
    nothing in a file but can stand for any shape)."""
    if not isinstance(weights, dict) or not weights or not all(
            isinstance(v, torch.Tensor) for v in weights.values()):
        raise UserError(f"{source}: the weights are not a state dict of tensors (found "
                        f"{type(weights).__name__}); the file is damaged or not a generator")
    empty = [k for k, v in weights.items() if v.numel() == 0]
    if empty:
        shape = list(weights[empty[0]].shape)
        raise UserError(f"{source}: tensor '{empty[0]}' has no elements (shape {shape}"
                        f"{f'; {len(empty) - 1} more' if len(empty) > 1 else ''}): not the "
                        f"weights of a trained network")
    return weights


def _fits_on_meta(spec: dict[str, Any], weights: dict[str, torch.Tensor], source: str,
                  registry: Registry) -> bool:
    """Refuse ``weights`` that do not fit ``spec`` before anything is allocated: the network is
    built on the meta device (shapes, no memory) under :class:`_Budget`, and the file's tensor
    names and shapes are checked against it. False for a generator that cannot be built on the
    meta device: its real build then runs under the budget instead."""
    name = spec.get("name")
    try:
        with torch.device("meta"), _Budget(weights, slack=1 << 20):
            module = registry.build("generator", spec, f"generator in {source}")
    except _TooBig:
        raise UserError(f"{source}: generator {name} as specified ({_spec_text(spec)}) is far "
                        f"larger than the {len(weights)} tensors of "
                        f"{_count(weights)} values in the file: the spec does not match its "
                        f"weights; refused before allocating it") from None
    except UserError:
        raise
    except Exception:  # noqa: BLE001 - a generator that cannot be built on the meta device
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "copying into a meta parameter is a no-op"
        try:
            missing, unexpected = module.load_state_dict(weights, strict=False)
        except RuntimeError as exc:  # size mismatches
            raise UserError(f"{source}: weights do not fit generator {name} "
                            f"({_spec_text(spec)}): {_fit_error(exc)}") from None
    if missing or unexpected:
        parts = [f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})"
                 for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise UserError(f"{source}: weights do not fit generator {name} ({_spec_text(spec)}): "
                        f"{'; '.join(parts)}")
    return True


def _spec_text(spec: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "name")
    return text if len(text) <= 120 else text[:117] + "..."


def _count(weights: dict[str, torch.Tensor]) -> str:
    return f"{_present(weights):,}"


def _build(spec: dict[str, Any], weights: Any, source: str, registry: Registry) -> nn.Module:
    """The generator ``spec`` with ``weights`` loaded: checked on the meta device first, so a
    file whose spec or shapes ask for a network far larger than its weights is refused in one
    line before any memory is taken."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise UserError(f"{source}: the generator spec is not a mapping with a name "
                        f"(found {type(spec).__name__}); the file is damaged")
    weights = _check_tensors(weights, source)
    checked = _fits_on_meta(spec, weights, source, registry)
    try:  # once the shapes are checked, the weights bound what the build allocates
        with contextlib.nullcontext() if checked else _Budget(weights):
            module = registry.build("generator", spec, f"generator in {source}")
    except _TooBig:
        raise UserError(f"{source}: generator {spec['name']} as specified "
                        f"({_spec_text(spec)}) is far larger than the weights in the file; "
                        f"refused") from None
    try:
        module.load_state_dict(weights)
    except RuntimeError as exc:
        raise UserError(f"{source}: weights do not fit generator {spec.get('name')} "
                        f"({_fit_error(exc)})") from None
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


def _recognise(state: dict[str, torch.Tensor], path: Path,
               registry: Registry) -> LoadedGenerator:
    """Architecture and weights from a plain state dict, trying each loader in turn."""
    tried = []
    for name in registry.names("generator"):
        try:
            factory = registry.get("generator", name).factory
        except UserError:
            continue
        recognise = getattr(factory, "from_state_dict", None)
        if recognise is None:
            continue
        tried.append(name)
        try:
            found = recognise(state)
        except UserError as exc:  # its keys, with shapes that no such network has
            raise UserError(f"{path}: {exc}") from None
        if found is not None:
            spec, weights = found
            return LoadedGenerator(_build(spec, weights, str(path), registry), (0.0, 1.0), spec,
                                   path, f"state dict ({name})")
    try:
        import spandrel
    except ImportError:
        tried.append("spandrel (not installed: pip install 'plfw[spandrel]')")
    else:
        try:
            with _Budget(state):
                descriptor = spandrel.ModelLoader().load_from_state_dict(state)
        except _TooBig:
            raise UserError(f"{path}: spandrel reads these weights as a network far larger "
                            f"than the {len(state)} tensors of {_count(state)} values in the "
                            f"file; refused before allocating it") from None
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


def _entry(state: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path,
           what: str) -> Any:
    """``state[key]`` of a plfw file, or one line saying what is missing or wrong."""
    if key not in state:
        raise UserError(f"{path}: plfw {what} without '{key}' (the file is damaged or was not "
                        f"written by plfw); export the model again or pass its checkpoint")
    value = state[key]
    if not isinstance(value, kind):
        raise UserError(f"{path}: '{key}' in this plfw {what} is a {type(value).__name__}, "
                        f"not what plfw writes (the file is damaged)")
    return value


def open_generator(source: str | Path, registry: Registry) -> LoadedGenerator:
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
        loaded = LoadedGenerator(_build(spec, state, str(path), registry), (0.0, 1.0), spec,
                                 path, "plfw")
    elif fmt == GENERATOR_FORMAT:
        spec = dict(_entry(state, "generator", dict, path, "exported generator"))
        weights = _entry(state, "state_dict", dict, path, "exported generator")
        loaded = LoadedGenerator(_build(spec, weights, str(path), registry), (0.0, 1.0), spec,
                                 path, "plfw")
    elif fmt == CHECKPOINT_FORMAT:
        cfg = _entry(state, "config", dict, path, "checkpoint")
        generator = _entry(cfg, "generator", (dict, str), path, "checkpoint's config")
        spec = dict(generator) if isinstance(generator, dict) else {"name": generator}
        spec.setdefault("scale", cfg.get("scale", 4))
        weights = (state["ema"] if state.get("ema") is not None
                   else _entry(state, "generator", dict, path, "checkpoint"))
        loaded = LoadedGenerator(_build(spec, weights, str(path), registry), (0.0, 1.0), spec,
                                 path, "plfw checkpoint")
    else:
        tensors, where = _unwrap_state(state)
        if not tensors or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
            keys = ", ".join(map(str, list(state)[:5]))
            raise UserError(f"{path}: not a plfw checkpoint, exported generator or state dict "
                            f"of tensors (top-level keys: {keys}; looked inside "
                            f"{', '.join(WRAPPERS)})")
        loaded = _recognise(_check_tensors(tensors, str(path)), path, registry)
        if where:
            loaded.how += f" from {where}"
    out_range = tuple(getattr(loaded.module, "output_range", (0.0, 1.0)))
    if len(out_range) != 2 or not all(math.isfinite(v) for v in out_range):
        raise UserError(f"{path}: generator has an invalid output range {out_range}")
    loaded.out_range = out_range  # type: ignore[assignment]
    return loaded


def load_generator(source: str | Path,
                   registry: Registry) -> tuple[nn.Module, tuple[float, float]]:
    """(generator in eval mode, its output range) from a file or a bundled model's name."""
    loaded = open_generator(source, registry)
    return loaded.module, loaded.out_range

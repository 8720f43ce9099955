"""``plfw export``: a generator as ONNX (for ONNX runtimes, chaiNNer and friends) or as
safetensors (plfw and other tools load it without a config or pickle).

- ONNX: input ``lr`` (N, 3, H, W) RGB in [0, 1], output ``sr`` (N, 3, sH, sW) in [0, 1]: the
  generator's own output range is mapped to [0, 1] inside the graph, so every exported model
  has the convention ONNX SR tools expect. Height and width are dynamic (at least 4 pixels).
  The plfw spec and the scale are stored in the model's metadata. Exported in fp32 with
  ``torch.onnx.export(dynamo=True)`` (needs ``pip install 'plfw[onnx]'``).
- safetensors: the state dict plus metadata ``format`` = plfw-generator-1 and ``generator`` =
  the JSON spec, which :func:`plfw.inference.generators.load_generator` reads back. A spandrel model
  is written as its plain state dict (spandrel recognises it again from the keys).

A generator with ``residual: bicubic`` calls plfw's MATLAB ``imresize``, whose weight
matrices depend on the image size; for ONNX its bicubic base is rebuilt as fixed per-phase
convolutions (:func:`bicubic_upscale_conv`), the same maths for integer scales.
Outputs are written atomically and never over an existing file without ``overwrite``.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from plfw.core.errors import UserError
from plfw.core.registry import Registry
from plfw.inference.generators import GENERATOR_FORMAT, LoadedGenerator, open_generator, to_unit
from plfw.storage.checkpoint import atomic_write_bytes

FORMATS = ("onnx", "safetensors")
MIN_SIDE = 4  # smallest input side an exported ONNX graph accepts


def _cubic(x: float) -> float:
    """Keys' cubic kernel with a = -0.5, the one MATLAB's imresize uses."""
    a, ax = -0.5, abs(x)
    if ax <= 1:
        return (a + 2) * ax ** 3 - (a + 3) * ax ** 2 + 1
    if ax < 2:
        return a * ax ** 3 - 5 * a * ax ** 2 + 8 * a * ax - 4 * a
    return 0.0


def _phase_kernels(scale: int, pad: int) -> torch.Tensor:
    """(scale, 1, 2 * pad + 1) taps: output pixel k * scale + r of an integer upscale is the
    weighted sum of input pixels k - pad .. k + pad (MATLAB's coordinate mapping, weights
    normalised to sum 1)."""
    taps = torch.zeros(scale, 1, 2 * pad + 1, dtype=torch.float64)
    for r in range(scale):
        # 0-based input coordinate of output pixel r (MATLAB: u = i / s + (1 - 1 / s) / 2)
        centre = (r + 0.5) / scale - 0.5
        weights = {o: _cubic(centre - o) for o in range(-pad, pad + 1)}
        total = sum(weights.values())
        for o, w in weights.items():
            taps[r, 0, o + pad] = w / total
    return taps


def _symmetric_pad(x: torch.Tensor, pad: int, dim: int) -> torch.Tensor:
    """Mirror ``pad`` pixels including the edge one (MATLAB's symmetric border)."""
    n = x.shape[dim]
    head = x.narrow(dim, 0, pad).flip(dim)
    tail = x.narrow(dim, n - pad, pad).flip(dim)
    return torch.cat([head, x, tail], dim)


def bicubic_upscale_conv(x: torch.Tensor, scale: int) -> torch.Tensor:
    """MATLAB-compatible bicubic upscale of NCHW ``x`` by an integer ``scale`` using only
    padding, convolutions and reshapes, so traced graphs work for every image size (inputs at
    least 3 pixels a side)."""
    pad = 3
    kernel = _phase_kernels(scale, pad).to(x.dtype).to(x.device)
    n, c, h, w = x.shape
    t = x.reshape(n * c, 1, h, w)
    # width: (B, 1, H, W + 2p) -> (B, s, H, W) -> interleave the phases -> (B, 1, H, sW)
    t = F.conv2d(_symmetric_pad(t, pad, 3), kernel[:, :, None, :])
    t = t.permute(0, 2, 3, 1).reshape(n * c, 1, h, w * scale)
    # height, likewise
    t = F.conv2d(_symmetric_pad(t, pad, 2), kernel[:, :, :, None])
    t = t.permute(0, 3, 2, 1).reshape(n * c, w * scale, h * scale).transpose(1, 2)
    return t.reshape(n, c, h * scale, w * scale)


class UnitOutput(nn.Module):
    """A generator whose output is mapped from its range to [0, 1] (clamped), for export."""

    def __init__(self, module: nn.Module, out_range: tuple[float, float]) -> None:
        super().__init__()
        self.out_range = out_range
        self.scale = int(getattr(module, "scale", 4))
        self.bicubic = getattr(module, "residual", "none") == "bicubic"
        if self.bicubic:  # its own forward minus the size-dependent imresize, added below
            module = copy.deepcopy(module)
            module.residual = "none"
        self.module = module

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        out = self.module(lr)
        if self.bicubic:
            low, high = self.out_range
            out = out + low + (high - low) * bicubic_upscale_conv(lr, self.scale)
        return to_unit(out, self.out_range)


def default_output(model: str, fmt: str) -> Path:
    """``<model stem>.<format>`` in the current folder."""
    return Path(f"{Path(model).stem}.{fmt}")


def _onnx_bytes(loaded: LoadedGenerator) -> bytes:
    try:
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError:
        raise UserError("ONNX export needs onnx and onnxscript: pip install 'plfw[onnx]'") from None
    module = loaded.module
    if hasattr(module, "descriptor"):  # spandrel: export the bare network, it is [0, 1] already
        module = module.model
    wrapped = UnitOutput(module.float().eval(), loaded.out_range).eval()
    example = torch.rand(1, 3, 32, 32)
    dims = {2: torch.export.Dim("height", min=MIN_SIDE, max=65536),
            3: torch.export.Dim("width", min=MIN_SIDE, max=65536)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(wrapped, (example,), dynamo=True, input_names=["lr"],
                                        output_names=["sr"], dynamic_shapes=(dims,),
                                        verbose=False)
    except Exception as exc:  # the exporter reports graph problems through many types
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"{loaded.path}: cannot export this generator to ONNX "
                        f"({type(exc).__name__}: {detail})") from None
    proto = program.model_proto
    meta = {"plfw_scale": str(wrapped.scale), "plfw_input": "RGB NCHW float32 in [0, 1]",
            "plfw_output": "RGB NCHW float32 in [0, 1]", "plfw_source": loaded.how}
    if loaded.spec is not None:
        meta["plfw_generator"] = json.dumps(loaded.spec)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def _safetensors_bytes(loaded: LoadedGenerator) -> bytes:
    from safetensors.torch import save

    module = loaded.module
    if loaded.spec is None:  # spandrel: the network's own keys, so spandrel finds it again
        state = module.model.state_dict()  # type: ignore[union-attr]
        metadata = {"format": "state-dict", "architecture": str(loaded.how)}
    else:
        state = module.state_dict()
        metadata = {"format": GENERATOR_FORMAT, "generator": json.dumps(loaded.spec)}
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    return save(tensors, metadata=metadata)


def export_generator(model: str, fmt: str, registry: Registry, out: str | Path | None = None,
                     overwrite: bool = False) -> Path:
    """Write ``model`` (a file or a bundled name) as ``fmt``; return the path written."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format '{fmt}' (use one of {', '.join(FORMATS)})")
    target = Path(out) if out else default_output(model, fmt)
    if target.is_dir():
        target = target / default_output(model, fmt).name
    if target.exists() and not overwrite:
        raise UserError(f"{target} exists; pass --overwrite to replace it")
    loaded = open_generator(model, registry)
    data = _onnx_bytes(loaded) if fmt == "onnx" else _safetensors_bytes(loaded)
    try:
        atomic_write_bytes(target, data)
    except OSError as exc:
        raise UserError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target


def describe(path: Path) -> str:
    """One line about an exported file: its size."""
    size = path.stat().st_size
    return f"{path} ({size / 2**20:.1f} MiB)" if size >= 2**20 else f"{path} ({size} bytes)"


__all__ = ["FORMATS", "bicubic_upscale_conv", "default_output", "describe", "export_generator"]

"""plfw export: ONNX that onnxruntime runs like torch on any size, safetensors that plfw
loads back without a config; never over an existing file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import plfw
from plfw.checkpoint import atomic_torch_save
from plfw.cli import main
from plfw.export import bicubic_upscale_conv
from plfw.generators import GENERATOR_FORMAT, load_generator, to_unit
from plfw.imresize import imresize


def _phase_file(tmp_path: Path, spec: dict) -> Path:
    """A run's models/<phase>.pt, in the layout the trainer writes."""
    torch.manual_seed(0)
    module = plfw.build("generator", spec)
    path = tmp_path / "run" / "models" / "srgan.pt"
    atomic_torch_save({"format": GENERATOR_FORMAT, "generator": spec,
                       "state_dict": module.state_dict(), "phase": "srgan", "step": 1}, path)
    return path


def _torch_unit(model: str | Path, x: torch.Tensor) -> torch.Tensor:
    module, out_range = load_generator(model)
    with torch.no_grad():
        return to_unit(module(x), out_range)


def _onnx_matches_torch(onnx_path: Path, model: str | Path) -> float:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for shape in [(1, 3, 12, 17), (1, 3, 23, 9)]:  # two sizes, neither the traced 32x32
        x = torch.rand(*shape)
        (sr,) = session.run(["sr"], {"lr": x.numpy()})
        want = _torch_unit(model, x)
        assert sr.shape == tuple(want.shape)
        worst = max(worst, float((torch.from_numpy(sr) - want).abs().max()))
    return worst


@pytest.mark.parametrize("spec", [
    {"name": "srresnet", "blocks": 1, "channels": 8, "residual": "bicubic", "scale": 4},
    # slow (10-20 s each on 2 cores): one ONNX export stays in the default run
    pytest.param({"name": "rrdbnet", "num_block": 1, "num_feat": 8, "num_grow_ch": 4,
                  "scale": 2}, marks=pytest.mark.slow),
    pytest.param({"name": "msrresnet", "num_block": 1, "num_feat": 8, "scale": 3},
                 marks=pytest.mark.slow),
])
def test_onnx_export_of_a_runs_model_matches_torch_on_two_sizes(tmp_path: Path,
                                                                 spec: dict) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    src = _phase_file(tmp_path, spec)
    out = tmp_path / "model.onnx"
    assert main(["export", str(src), "--format", "onnx", "--out", str(out)]) == 0
    assert _onnx_matches_torch(out, src) <= 1e-4
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["plfw_generator"])["name"] == spec["name"]


@pytest.mark.slow
def test_onnx_export_of_the_bundled_srgan(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path / "srgan.onnx"
    assert main(["export", "srgan", "--format", "onnx", "--out", str(out)]) == 0
    assert _onnx_matches_torch(out, "srgan") <= 1e-4


def test_safetensors_export_loads_back_without_a_config(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors import safe_open

    monkeypatch.chdir(tmp_path)
    assert main(["export", "srresnet", "--format", "safetensors"]) == 0
    out = tmp_path / "srresnet.safetensors"  # default name, current folder
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == GENERATOR_FORMAT
    assert json.loads(meta["generator"])["name"] == "srresnet"
    x = torch.rand(1, 3, 9, 7)
    assert torch.equal(_torch_unit(out, x), _torch_unit("srresnet", x))
    # an exported run's model too
    src = _phase_file(tmp_path, {"name": "rrdbnet", "num_block": 1, "num_feat": 8,
                                 "num_grow_ch": 4})
    assert main(["export", str(src), "--format", "safetensors", "--out", "r.safetensors"]) == 0
    assert torch.equal(_torch_unit("r.safetensors", x), _torch_unit(src, x))


def test_export_never_overwrites_without_the_flag(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"keep me")
    assert main(["export", "srresnet", "--format", "safetensors", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == b"keep me"
    assert main(["export", "srresnet", "--format", "safetensors", "--out", str(out),
                 "--overwrite"]) == 0
    assert out.read_bytes() != b"keep me" and not list(tmp_path.glob(".*tmp"))
    assert main(["export", str(tmp_path / "missing.pth"), "--format", "onnx"]) == 2


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_graph_friendly_bicubic_is_matlab_imresize(scale: int) -> None:
    x = torch.rand(2, 3, 5, 7, dtype=torch.float64)
    assert torch.allclose(bicubic_upscale_conv(x, scale), imresize(x, scale=scale), atol=1e-12)

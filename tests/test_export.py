"""plfw export: ONNX that onnxruntime runs like torch on any size, safetensors that plfw
loads back without a config; never over an existing file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import plfw
from plfw.cli import main
from plfw.imaging.imresize import imresize
from plfw.inference.export import bicubic_upscale_conv
from plfw.inference.generators import GENERATOR_FORMAT, load_generator, to_unit
from plfw.storage.checkpoint import FORMAT as CHECKPOINT_FORMAT
from plfw.storage.checkpoint import atomic_torch_save


def _phase_file(tmp_path: Path, spec: dict) -> Path:
    """A run's models/<phase>.pt, in the layout the trainer writes."""
    torch.manual_seed(0)
    module = plfw.build("generator", spec)
    path = tmp_path / "run" / "models" / "srgan.pt"
    atomic_torch_save({"format": GENERATOR_FORMAT, "generator": spec,
                       "state_dict": module.state_dict(), "phase": "srgan", "step": 1}, path)
    return path


def _torch_unit(model: str | Path, x: torch.Tensor) -> torch.Tensor:
    module, out_range = load_generator(model, plfw.load_registry())
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


# ------------------------------------------- files that ask for a huge network (issue 36)

#: Runs plfw commands in a fresh process after a real model has been loaded once (the
#: baseline) and reports how far the peak resident memory grew over the attack files.
ATTACK_RUNNER = """
import contextlib, io, json, resource, sys
import plfw
from plfw.cli import main
from plfw.inference.generators import open_generator
open_generator("srresnet", plfw.load_registry())
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # MiB (Linux: KiB)
base, results = peak(), []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    results.append([code, err.getvalue()])
print(json.dumps({"grew_mib": peak() - base, "results": results}))
"""


def _plfw_safetensors(path: Path, spec: dict, tensors: dict) -> Path:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"format": GENERATOR_FORMAT,
                                            "generator": json.dumps(spec)})
    return path


def _one(*shape: int) -> torch.Tensor:
    """One stored value that claims ``shape`` (stride 0): a few bytes in a .pt file."""
    return torch.zeros(1).expand(*shape)


def _attack_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        # a plfw safetensors file whose spec asks for 100000 channels (~4 TB of weights)
        "channels": _plfw_safetensors(tmp_path / "channels.safetensors",
                                      {"name": "srresnet", "channels": 100000, "blocks": 1},
                                      {"head.0.weight": torch.zeros(1)}),
        # ... or for a million residual blocks (~300 GB with the default 64 channels)
        "blocks": _plfw_safetensors(tmp_path / "blocks.safetensors",
                                    {"name": "srresnet", "blocks": 10**6},
                                    {"head.0.weight": torch.zeros(1)}),
    }
    # an RRDB state dict whose zero-element tensors have the shapes of 100000 features
    empty = {"conv_first.weight": torch.zeros(100000, 3, 0, 0),
             "body.0.rdb1.conv1.weight": torch.zeros(32, 100000, 0, 0),
             "conv_body.weight": torch.zeros(100000, 100000, 0, 0),
             "conv_up1.weight": torch.zeros(0, 0, 0, 0), "conv_up2.weight": torch.zeros(0, 0, 0, 0),
             "conv_last.weight": torch.zeros(3, 100000, 0, 0)}
    torch.save(empty, files.setdefault("rrdb_empty", tmp_path / "rrdb_empty.pth"))
    # the same with one stored value per tensor, expanded to the full shapes (stride 0)
    strided = {"conv_first.weight": _one(100000, 3, 3, 3),
               "body.0.rdb1.conv1.weight": _one(32, 100000, 3, 3),
               "conv_body.weight": _one(100000, 100000, 3, 3),
               "conv_up1.weight": _one(100000, 100000, 3, 3),
               "conv_up2.weight": _one(100000, 100000, 3, 3),
               "conv_last.weight": _one(3, 100000, 3, 3)}
    torch.save(strided, files.setdefault("rrdb_strided", tmp_path / "rrdb_strided.pth"))
    # an exported generator whose every tensor has exactly the shape its spec needs (20000
    # channels, ~160 GB), each one stored value
    spec = {"name": "srresnet", "channels": 20000, "blocks": 1, "scale": 4}
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in plfw.build("generator", spec).state_dict().items()}
    state = {k: _one(*shape) if len(shape) else torch.zeros((), dtype=torch.long)
             for k, shape in shapes.items()}
    atomic_torch_save({"format": GENERATOR_FORMAT, "generator": spec, "state_dict": state},
                      files.setdefault("export_strided", tmp_path / "export_strided.pt"))
    return files


def test_a_tiny_file_asking_for_a_huge_network_is_refused_before_allocating(
        tmp_path: Path) -> None:
    files = _attack_files(tmp_path)
    sizes = {name: f.stat().st_size for name, f in files.items()}
    assert sizes["channels"] < 500 and sizes["blocks"] < 500 and max(sizes.values()) < 16384
    hr = tmp_path / "hr"
    hr.mkdir()
    torch.manual_seed(0)
    from plfw.imaging.images import save_image

    save_image(torch.rand(3, 16, 16), hr / "a.png")
    config = tmp_path / "init.yaml"
    config.write_text(json.dumps({
        "generator": {"name": "srresnet", "blocks": 1, "channels": 8}, "run_dir": str(
            tmp_path / "run"),
        "data": {"train": {"name": "hr_folder", "root": str(hr), "crop": 8}, "batch_size": 1},
        "phases": {"srresnet": {"steps": 1, "init": str(files["blocks"])}},
        "train": {"device": "cpu", "precision": "fp32"}}))
    out = str(tmp_path / "out")
    commands = [
        ["export", str(files["channels"]), "--format", "safetensors", "--out", out + ".st"],
        ["upscale", str(hr), "--model", str(files["blocks"]), "--out", out, "--quiet",
         "--device", "cpu"],
        ["eval", "--model", str(files["rrdb_empty"]), "--hr", str(hr), "--device", "cpu"],
        ["eval", "--model", str(files["rrdb_strided"]), "--hr", str(hr), "--device", "cpu"],
        ["export", str(files["export_strided"]), "--format", "onnx", "--out", out + ".onnx"],
        ["train", str(config), "--quiet"],  # init= of a phase
    ]
    done = subprocess.run([sys.executable, "-c", ATTACK_RUNNER, json.dumps(commands)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for argv, (code, err) in zip(commands, report["results"], strict=True):
        assert code == 2, (argv, err)
        assert err.count("\n") == 1 and err.startswith("plfw: error: "), (argv, err)
        assert "refused before allocating" in err or "has no elements" in err, (argv, err)
    assert report["grew_mib"] < 200, report
    assert not (tmp_path / "out").exists() and not (tmp_path / "run" / "models").exists()


def test_damaged_plfw_files_are_one_line_errors(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    module = plfw.build("generator", {"name": "srresnet", "blocks": 1, "channels": 8})
    spec = {"name": "srresnet", "blocks": 1, "channels": 8}
    cases = {
        "no_weights.pt": ({"format": GENERATOR_FORMAT, "generator": spec}, "'state_dict'"),
        "no_spec.pt": ({"format": GENERATOR_FORMAT, "state_dict": module.state_dict()},
                       "'generator'"),
        "no_config.pt": ({"format": CHECKPOINT_FORMAT, "generator": module.state_dict()},
                         "'config'"),
        "no_generator.pt": ({"format": CHECKPOINT_FORMAT, "config": {"scale": 4}},
                            "'generator'"),
        "bad_weights.pt": ({"format": GENERATOR_FORMAT, "generator": spec, "state_dict": 5},
                           "'state_dict'"),
        "missing_keys.pt": ({"format": GENERATOR_FORMAT, "generator": spec, "state_dict": {
            k: v for k, v in module.state_dict().items() if not k.startswith("tail")}},
            "missing (e.g. tail.weight"),
    }
    for name, (content, expected) in cases.items():
        torch.save(content, tmp_path / name)
        assert main(["export", str(tmp_path / name), "--format", "safetensors",
                     "--out", str(tmp_path / "o.safetensors")]) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, (name, err)
    spec_text = _plfw_safetensors(tmp_path / "spec5.safetensors", 5,  # type: ignore[arg-type]
                                  {"head.0.weight": torch.zeros(1)})
    assert main(["export", str(spec_text), "--format", "safetensors"]) == 2
    assert "not a mapping with a name" in capsys.readouterr().err

"""``plfw bench`` end to end on tiny steps: the JSON it promises, with and without a reference.
No timing is asserted here: the speed targets are checked by running the benchmark itself."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers import make_images, tiny_config

from plfw.cli import main
from plfw.errors import UserError

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "bench" / "reference_step.py"


def _bench(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["bench", "--json", "--repeats", "1", "--warmup", "0", "--device", "cpu",
                 *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_bench_json_has_every_step_and_measure(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = tiny_config(tmp_path)
    photos = make_images(tmp_path / "loader", 3, (40, 40))
    out = _bench(capsys, "--config", str(config), "--batch", "2", "--crop", "16",
                 "--reference", "none", "--loader", str(photos), "--workers", "0")
    assert set(out["steps"]) == {"mse", "srgan"}
    assert out["steps"]["mse"]["phase"] == "srresnet"
    for entry in out["steps"].values():
        assert entry["images_per_s"] > 0
        assert entry["gflop_per_step"] > 0 and 0 < entry["efficiency"]
        assert "speedup" not in entry
        assert entry["compiled_prelu"] is False  # the tiny config's phases are short
        parts = entry["phases_s"]
        assert parts["generator_forward"] > 0 and parts["optimizer"] > 0
        assert entry["loader_ratio"] > 0
    assert out["steps"]["srgan"]["phases_s"]["discriminator_forward"] > 0
    assert out["steps"]["srgan"]["phases_s"]["loss_network_forward"] > 0
    used = "bf16" if out["settings"]["bf16"] else "fp32"
    other = "fp32" if used == "bf16" else "bf16"
    assert out["matmul_gflops"][used] > 0  # only the precision the step runs in is timed
    assert out["matmul_gflops"][other].startswith("skipped")
    assert out["loader"]["images"] == 3


def test_bench_times_the_reference_step_side_by_side(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not REFERENCE.is_file():
        pytest.skip(f"reference step not found at {REFERENCE}")
    out = _bench(capsys, "--steps", "mse", "--batch", "1", "--crop", "16", "--reference",
                 str(REFERENCE), "--loader", "none", "generator.blocks=2")
    mse = out["steps"]["mse"]
    assert mse["reference_images_per_s"] > 0 and mse["speedup"] > 0
    assert out["reference"] == str(REFERENCE)
    assert "loader" not in out


def test_bench_rejects_an_unknown_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tiny_config(tmp_path, gan=False)
    assert main(["bench", "--config", str(config), "--steps", "srgan", "--reference",
                 "none"]) == 2
    assert "no phase for 'srgan'" in capsys.readouterr().err


def _script(name: str) -> Any:
    """A script under benchmarks/, imported as a module."""
    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_profile_step_splits_a_step_by_operator_class(tmp_path: Path) -> None:
    profile_step = _script("profile_step")
    out = profile_step.profile_step("srgan", "fp32", "false", 1, 2, 16, tiny_config(tmp_path))
    shares = out["classes"]
    assert shares["convolution"]["s"] > 0 and shares["batch norm"]["s"] > 0
    assert sum(v["share"] for v in shares.values()) == pytest.approx(1, abs=0.01)
    assert out["top"][0]["s"] >= out["top"][-1]["s"] > 0
    assert profile_step.classify("aten::_prelu_kernel_backward") == "activation"
    assert profile_step.classify("aten::convolution_backward") == "convolution"
    assert profile_step.classify("CompiledFunctionBackward") == "compiled PReLU"


@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                    reason="no C++ compiler for inductor")
def test_ab_step_times_two_variants_of_one_step_interleaved(tmp_path: Path) -> None:
    ab = _script("ab_step")
    a = ab.parse_variant("compile=activations,precision=fp32")
    b = ab.parse_variant("compile=false,channels-last=false")
    assert a == {"precision": "fp32", "channels_last": "auto", "compile": "activations"}
    out = ab.compare("mse", a, b, repeats=2, warmup=0, batch=2, crop=16,
                     config=str(tiny_config(tmp_path, gan=False)))
    assert out["a"]["compiled_prelu"] and not out["b"]["compiled_prelu"]
    assert not out["b"]["channels_last"] and not out["a"]["bf16"]
    assert len(out["a_s_all"]) == len(out["b_s_all"]) == 2 and out["speedup"] > 0
    with pytest.raises(UserError, match="KEY=VALUE"):
        ab.parse_variant("threads=2")

"""``plfw bench`` end to end on tiny steps: the JSON it promises, with and without a reference.
No timing is asserted here: the speed targets are checked by running the benchmark itself."""

from __future__ import annotations

import importlib.util
import json
import shutil
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import make_images, tiny_config

import plfw.bench.timing
from plfw.cli import main
from plfw.core.config import load_config, to_dict
from plfw.core.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def _bench(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["bench", "--json", "--repeats", "3", "--warmup", "0", "--device", "cpu",
                 *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_bench_json_is_consistent_with_its_own_timings(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tiny_config(tmp_path)
    photos = make_images(tmp_path / "loader", 3, (40, 40))
    out = _bench(capsys, "--config", str(config), "--batch", "2", "--crop", "16",
                 "--reference", "none", "--loader", str(photos), "--workers", "0")
    assert set(out["steps"]) == {"mse", "srgan"}
    assert out["steps"]["mse"]["phase"] == "srresnet"
    used = out["settings"]["precision"]
    assert used == ("bf16" if out["settings"]["bf16"] else "fp32")
    other = "fp32" if used == "bf16" else "bf16"
    ceiling = out["matmul_gflops"][used]  # only the precision the step runs in is timed
    assert out["matmul_gflops"][other].startswith("skipped")
    for entry in out["steps"].values():
        assert len(entry["s_all"]) == 3 and entry["s_per_step"] == statistics.median(
            entry["s_all"])
        # figures are rounded (4 decimals of seconds): compare them at that precision
        assert entry["images_per_s"] == pytest.approx(2 / entry["s_per_step"], rel=2e-2)
        assert entry["achieved_gflops"] == pytest.approx(
            entry["gflop_per_step"] / entry["s_per_step"], rel=2e-2)
        assert entry["efficiency"] == pytest.approx(entry["achieved_gflops"] / ceiling,
                                                    rel=1e-2)
        assert "speedup" not in entry
        assert entry["compiled_prelu"] is False  # the tiny config's phases are short
        parts = entry["phases_s"]
        # medians of three instrumented steps: each part is a share of the whole
        assert 0 < parts["generator_forward"] < parts["total"]
        assert 0 < parts["optimizer"] < parts["total"]
        assert entry["loader_ratio"] == pytest.approx(
            out["loader"]["images_per_s"] / entry["images_per_s"], rel=2e-2)
    mse, gan = out["steps"]["mse"], out["steps"]["srgan"]
    # the GAN step runs the same generator plus a discriminator and a loss network
    assert gan["gflop_per_step"] > mse["gflop_per_step"]
    assert mse["phases_s"]["discriminator_forward"] == 0  # no discriminator in that phase
    assert gan["phases_s"]["discriminator_forward"] > 0
    assert out["loader"]["images"] == 3


def test_bench_times_plfws_own_reference_step_side_by_side(
        capsys: pytest.CaptureFixture[str]) -> None:
    out = _bench(capsys, "--steps", "mse", "--batch", "1", "--crop", "16", "--loader", "none",
                 "generator.blocks=2")
    mse = out["steps"]["mse"]
    assert Path(out["reference"]) == Path(plfw.bench.timing.REFERENCE)
    assert mse["speedup"] == pytest.approx(mse["reference_s_per_step"] / mse["s_per_step"],
                                           rel=1e-2)
    assert "loader" not in out


def test_the_shipped_bench_config_is_the_papers_srgan_vgg54() -> None:
    """plfw bench's default config (inside the package, so a wheel has it) is the
    repository's configs/paper/srgan_vgg54.yaml with its extends chain merged."""
    import plfw.bench.command

    shipped = Path(plfw.bench.command.HERE) / "srgan_vgg54.yaml"
    assert to_dict(load_config(shipped)) == to_dict(
        load_config(REPO / "configs" / "paper" / "srgan_vgg54.yaml", [f"name={shipped.stem}"]))


def test_the_reference_step_trains_what_it_says() -> None:
    """The reference is a real SRGAN step: x4 output in [-1, 1], and one step moves both the
    generator and the discriminator (an MSE-only step leaves no discriminator)."""
    from plfw.bench import reference

    torch.manual_seed(0)
    g = reference.Generator(blocks=2)
    assert g(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)
    step = reference.build(batch=2, hr=32)
    cells = {type(c.cell_contents).__name__: c.cell_contents for c in step.__closure__}
    before = {k: [p.detach().clone() for p in m.parameters()]
              for k, m in cells.items() if k in ("Generator", "Discriminator")}
    step()
    for k, params in before.items():
        now = list(cells[k].parameters())
        assert any(not torch.equal(a, b) for a, b in zip(params, now, strict=True)), k


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

"""PReLU compiled on its own (plfw.nn.fused): torch's values and gradients, only where asked."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import REGISTRY, tiny_config

from plfw.assembly import bench_step
from plfw.core.config import load_config
from plfw.device.runtime import LONG_PHASE, make_runtime
from plfw.nn import fused
from plfw.nn.fused import PReLU, compiled_activations, prelu

#: inductor's CPU code needs a C++ compiler; without one plfw falls back (tested below)
needs_compiler = pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")), reason="no C++ compiler")


def _grads(fn, x0: torch.Tensor, w0: torch.Tensor, g: torch.Tensor, bf16: bool = False):
    x, w = x0.detach().requires_grad_(), w0.detach().requires_grad_()
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        y = fn(x, w)
    y.backward(g)
    return y, x.grad, w.grad


def _compiled(y: torch.Tensor) -> bool:
    return "Compiled" in type(y.grad_fn).__name__


@needs_compiler
def test_compiled_prelu_gives_torchs_values_and_gradients() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 6).contiguous(memory_format=torch.channels_last)
    w, g = torch.rand(8) * 0.5, torch.randn(2, 8, 5, 6)
    with compiled_activations():
        ours = _grads(prelu, x, w, g)
    theirs = _grads(F.prelu, x, w, g)
    assert _compiled(ours[0]) and not _compiled(theirs[0])
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    # bf16 autocast: values and input gradients identical, the slope's gradient a bf16
    # rounding of the exact sum (torch's own kernel accumulates it in bf16, less exactly)
    with compiled_activations():
        ours = _grads(prelu, x, w, g, bf16=True)
    theirs = _grads(F.prelu, x, w, g, bf16=True)
    assert ours[0].dtype == theirs[0].dtype == torch.bfloat16
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    xb, gb = x.bfloat16().double(), g.bfloat16().double()
    exact = (gb * xb.clamp(max=0)).sum((0, 2, 3))
    torch.testing.assert_close(ours[2].double(), exact, rtol=2**-8, atol=1e-6)


@needs_compiler
def test_compiled_only_inside_the_block_and_with_a_gradient() -> None:
    x, layer = torch.randn(1, 4, 3, 3, requires_grad=True), PReLU(4)
    assert not _compiled(layer(x))
    with compiled_activations():
        assert _compiled(layer(x))
        with torch.no_grad():
            assert layer(x).grad_fn is None
        with compiled_activations(False):
            assert not _compiled(layer(x))
    assert set(layer.state_dict()) == {"weight"} and isinstance(layer, torch.nn.PReLU)


def test_a_compiler_failure_falls_back_to_torchs_prelu_with_one_warning(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import torch._dynamo
    import torch._inductor.config as inductor

    monkeypatch.setattr(inductor.cpp, "cxx", ("/nonexistent/c++",))
    monkeypatch.setattr(inductor, "fx_graph_cache", False)
    monkeypatch.setattr(fused, "_compiled", None)
    torch._dynamo.reset()
    x = torch.randn(3, 7, 2, 2, dtype=torch.float64, requires_grad=True)  # a new graph
    w = torch.rand(7, dtype=torch.float64)
    try:
        with compiled_activations(), pytest.warns(RuntimeWarning, match="compiled PReLU"):
            y = prelu(x, w)
        assert not _compiled(y) and torch.equal(y, F.prelu(x, w))
        with compiled_activations(), warnings.catch_warnings():
            warnings.simplefilter("error")  # said once only
            assert not _compiled(prelu(x, w))
    finally:
        torch._dynamo.reset()


def test_steps_compile_prelu_alone_in_long_cpu_phases(tmp_path: Path) -> None:
    auto = make_runtime("cpu", "fp32", "false")
    assert auto.activations == "long" and not auto.compile
    assert make_runtime("cpu", "fp32", "false", "false").activations == "off"
    forced = make_runtime("cpu", "fp32", "false", "activations")
    assert forced.activations == "always" and not forced.compile
    for steps, rt, on in [(LONG_PHASE, auto, True), (LONG_PHASE - 1, auto, False),
                          (3, forced, True)]:
        cfg = load_config(tiny_config(tmp_path, gan=False), [f"phases.srresnet.steps={steps}"])
        step, _ = bench_step(REGISTRY, cfg, "srresnet", rt, batch=2, crop=16)
        assert step.fused is on


@needs_compiler
def test_a_step_with_compiled_prelu_trains_as_torchs_does(tmp_path: Path) -> None:
    cfg = load_config(tiny_config(tmp_path, gan=False))
    weights = []
    for mode in ("activations", "false"):
        rt = make_runtime("cpu", "fp32", "true", mode)
        step, call = bench_step(REGISTRY, cfg, "srresnet", rt, batch=2, crop=16)
        for _ in range(2):
            logs = call()
        weights.append((float(logs["loss"]), step.generator.state_dict()))
    (loss_a, a), (loss_b, b) = weights
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)

"""``plfw bench``: time the real training step, side by side with a reference step.

What one run measures (see docs/bench.md):
- each configured step (``mse``: the first phase without a discriminator, ``srgan``: the first
  with one) as built by the trainer (``plfw.training.step.TrainStep``), on synthetic batches: median
  seconds per step over ``--repeats``, images/s;
- the plain eager fp32 reference step (:mod:`plfw.bench.reference`, or any file with a
  ``build(batch, hr, mse_only)`` given as ``--reference``), timed interleaved with ours
  (A B A B ...), and the ratio;
- this machine's attainable 2048x2048 matmul FLOP/s in the precision the step uses (the other
  is reported as skipped), interleaved too, so the step's achieved FLOP/s (FlopCounterMode
  count / median time) becomes an efficiency;
- up to three instrumented steps (medians; synchronising timers on module forwards and
  optimizer steps; the timed steps carry no hooks): generator, loss network, discriminator
  forwards, optimizer, and the rest (backward passes, loss arithmetic);
- peak memory of one step: CUDA allocator peak, or on the CPU the rise of the process's peak
  resident set (VmHWM, reset through /proc/self/clear_refs), which also sees oneDNN's buffers;
- the real data loader on an image folder, in images/s, against each step's consumption.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FunctionType, ModuleType
from typing import Any

import torch
from torch import nn

from plfw.assembly import bench_step
from plfw.core.config import load_config
from plfw.core.errors import UserError
from plfw.core.registry import Registry
from plfw.device.probe import cpu_choice
from plfw.device.runtime import cpu_has_fast_bf16, make_runtime
from plfw.training.sampling import step_loader

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "reference.py"
#: where the loader is timed by default, relative to the working folder: the shared T91 set
#: next to a checkout, else the photos a checkout ships
LOADER_FOLDERS = (Path("..") / "shared" / "data" / "train" / "T91",
                  Path("assets") / "photos" / "train")


# ---------------------------------------------------------------- building the steps
def phase_for(cfg: Any, step: str) -> str:
    """``mse``: the first phase without a discriminator; ``srgan``: the first with one."""
    if step in cfg.phases:
        return step
    wanted = {"mse": False, "srgan": True}.get(step)
    for name, ps in cfg.phases.items():
        if wanted is not None and (ps.discriminator is not None) == wanted:
            return name
    raise UserError(f"bench --steps: no phase for '{step}' in the config (phases: "
                    f"{', '.join(cfg.phases)}; mse and srgan pick the first phase without / "
                    f"with a discriminator)")


def load_reference(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("plfw_bench_reference", path)
    if spec is None or spec.loader is None:
        raise UserError(f"bench --reference: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "build", None)):
        raise UserError(f"bench --reference: {path} has no build(batch, hr, mse_only)")
    return module


def move_closure(fn: Callable, device: torch.device, seen: set[int] | None = None) -> None:
    """Move the modules and tensors a CPU-built step function closes over to ``device``."""
    seen = set() if seen is None else seen
    if id(fn) in seen or not isinstance(fn, FunctionType) or not fn.__closure__:
        return
    seen.add(id(fn))
    for cell in fn.__closure__:
        value = cell.cell_contents
        if isinstance(value, nn.Module):
            value.to(device)
        elif isinstance(value, torch.Tensor):
            cell.cell_contents = value.to(device)
        elif isinstance(value, FunctionType):
            move_closure(value, device, seen)


def find_reference(option: str) -> Path | None:
    """The reference step's file: plfw's own by default, ``none`` for no reference."""
    if option.lower() == "none":
        return None
    if option:
        path = Path(option).expanduser()
        if not path.is_file():
            raise UserError(f"bench --reference: {path} not found")
        return path
    return REFERENCE


# ---------------------------------------------------------------- measuring
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def matmul_flops(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 3) -> float:
    """Best of ``reps`` n x n matmuls, in FLOP/s: what this machine attains right now. On a
    GPU 8192^2, as a 2048^2 product is over before the launch overhead is."""
    if device.type == "cuda":
        n, reps = 8192, 10
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = min(timed(lambda: a @ b, device) for _ in range(reps))
    return 2 * n**3 / best


def count_flops(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(field)


def memory_in_use(device: torch.device) -> int | None:
    """Bytes in use now: CUDA allocator, or the process's resident set (Linux)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.memory_allocated(device)
    try:
        return _status_kb("VmRSS") * 1024
    except OSError:
        return None


def peak_memory_bytes(fn: Callable[[], Any], device: torch.device, base: int | None) -> int | None:
    """Peak memory during one call above ``base`` (taken before the step was built, so
    weights, optimizer state and activations all count): CUDA allocator peak, or the CPU
    process's peak resident set (VmHWM, reset first through /proc/self/clear_refs)."""
    if base is None:
        return None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
        fn()
        return _status_kb("VmHWM") * 1024 - base
    except OSError:
        return None


@contextlib.contextmanager
def eager(modules: list[nn.Module]) -> Iterator[None]:
    """Run compiled modules eagerly for a while (hooks would force recompiles)."""
    saved = [getattr(m, "_compiled_call_impl", None) for m in modules]
    for m in modules:
        m._compiled_call_impl = None
    try:
        yield
    finally:
        for m, c in zip(modules, saved, strict=True):
            m._compiled_call_impl = c


def step_modules(step: Any) -> list[nn.Module]:
    p = step.phase
    return [m for m in (step.generator, p.discriminator, *p.losses.values()) if m is not None]


def phase_split(step: Any, call: Callable[[], Any], device: torch.device) -> dict[str, float]:
    """Seconds per part of one instrumented step (timers synchronise around each part)."""
    p = step.phase
    parts = {"generator": [step.generator],
             "loss_network": [m for k, m in p.losses.items() if k != p.adversarial],
             "discriminator": [p.discriminator] if p.discriminator is not None else []}
    spent = dict.fromkeys([*parts, "optimizer"], 0.0)
    handles, starts = [], {}

    def pre(key: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            _sync(device)
            starts[key] = time.perf_counter()
        return hook

    def post(key: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            _sync(device)
            spent[key] += time.perf_counter() - starts[key]
        return hook

    for key, modules in parts.items():
        for m in modules:
            handles += [m.register_forward_pre_hook(pre(key)), m.register_forward_hook(post(key))]
    for opt in (p.opt_g, p.opt_d):
        if opt is not None:
            handles += [opt.register_step_pre_hook(pre("optimizer")),
                        opt.register_step_post_hook(post("optimizer"))]
    modules = [m for ms in parts.values() for m in ms]
    try:
        with eager(modules):
            total = timed(call, device)
    finally:
        for h in handles:
            h.remove()
    names = {"generator": "generator_forward", "loss_network": "loss_network_forward",
             "discriminator": "discriminator_forward", "optimizer": "optimizer"}
    out = {names[k]: round(v, 4) for k, v in spent.items()}
    out["backward_and_rest"] = round(total - sum(spent.values()), 4)
    out["total"] = round(total, 4)
    return out


def loader_rate(cfg: Any, folder: Path, batch: int, crop: int, workers: int,
                registry: Registry, batches: int = 12) -> dict[str, Any]:
    """Images/s of the trainer's loader (``plfw.training.sampling.step_loader``) on ``folder``."""
    spec = registry.with_defaults("dataset", cfg.data.train, scale=cfg.scale)
    spec.update(root=str(folder), crop=crop)
    dataset = registry.build("dataset", spec, "bench --loader")
    it = step_loader(dataset, batch, cfg.seed, 0, workers)
    next(it)  # workers start, first batch
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    seconds = time.perf_counter() - start
    del it
    return {"folder": str(folder), "workers": workers, "images": len(dataset),
            "images_per_s": round(batches * batch / seconds, 2)}


def machine(device: torch.device) -> dict[str, Any]:
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "device": str(device)}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ---------------------------------------------------------------- the run
def run(args: argparse.Namespace, registry: Registry) -> dict[str, Any]:
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0:
        raise UserError("bench: --batch and --repeats must be >= 1, --warmup >= 0")
    cfg = load_config(args.config, args.overrides)
    if args.crop % cfg.scale:
        raise UserError(f"bench --crop: {args.crop} must be a multiple of the scale "
                        f"({cfg.scale})")
    rt = make_runtime(args.device, args.precision, args.channels_last, args.compile,
                      args.threads)
    dev = rt.device
    reference_path = find_reference(args.reference)
    reference = load_reference(reference_path) if reference_path else None

    result: dict[str, Any] = {
        "machine": machine(dev),
        "command": "plfw bench " + " ".join(_argv(args)),
        "settings": {"batch": args.batch, "crop": args.crop, "repeats": args.repeats,
                     "warmup": args.warmup, "precision": rt.precision, "bf16": rt.bf16,
                     "channels_last": rt.channels_last,
                     "compile": rt.compile_mode if rt.compile else False,
                     "cpu_fast_bf16": cpu_has_fast_bf16(),
                     "probe": cpu_choice() if dev.type == "cpu" else None,
                     "config": str(args.config)},
        "reference": str(reference_path) if reference_path else None,
        "steps": {},
    }
    # Only the precision the step runs in is timed: a bf16 matmul on a CPU without fast bf16
    # takes tens of seconds and says nothing about this step.
    used = rt.precision
    mm: dict[str, list[float]] = {used: []}
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[used]

    def measure_matmul() -> None:
        mm[used].append(matmul_flops(dev, dtype))

    for name in [s.strip() for s in args.steps.split(",") if s.strip()]:
        phase = phase_for(cfg, name)
        _progress(f"{name}: building phase '{phase}'")
        ref = None
        if reference is not None:
            ref = reference.build(args.batch, args.crop, cfg.phases[phase].discriminator is None)
            if dev.type != "cpu":
                move_closure(ref, dev)
        base = memory_in_use(dev)  # after the reference: only our step's memory counts
        step, ours = bench_step(registry, cfg, phase, rt, args.batch, args.crop)
        _progress(f"{name}: {args.warmup} warm-up steps" +
                  (" (the first compiles PReLU: seconds)" if step.fused else ""))
        for _ in range(args.warmup):
            timed(ours, dev)
            if ref is not None:
                timed(ref, dev)
        times: list[float] = []
        ref_times: list[float] = []
        _progress(f"{name}: timing {args.repeats} steps" + (" and reference" if ref else ""))
        for _ in range(args.repeats):
            times.append(timed(ours, dev))
            if ref is not None:
                ref_times.append(timed(ref, dev))
            measure_matmul()
        entry = _summarise(times, args.batch)
        entry["phase"] = phase
        entry["compiled_prelu"] = step.fused  # plfw.nn.fused: PReLU compiled on its own
        if ref_times:
            ref_s = statistics.median(ref_times)
            entry["reference_s_per_step"] = round(ref_s, 4)
            entry["reference_images_per_s"] = round(args.batch / ref_s, 3)
            entry["reference_s_all"] = [round(t, 4) for t in ref_times]
            entry["speedup"] = round(ref_s / entry["s_per_step"], 3)
            # the ratio of the fastest steps: what each attains when the machine is not busy
            entry["speedup_best"] = round(min(ref_times) / min(times), 3)
            # ratios of neighbouring steps, which saw the same load: robust to slow drifts
            entry["speedup_paired"] = round(statistics.median(
                r / t for r, t in zip(ref_times, times, strict=True)), 3)
        with eager(step_modules(step)):  # FLOPs of the same maths, without dispatch-mode
            flops = count_flops(ours)  # guards recompiling the compiled modules
        _progress(f"{name}: {entry['images_per_s']} img/s; counting FLOPs, memory, split")
        entry["gflop_per_step"] = float(f"{flops / 1e9:.4g}")
        entry["achieved_gflops"] = float(f"{flops / 1e9 / entry['s_per_step']:.4g}")
        peak = peak_memory_bytes(ours, dev, base)
        entry["peak_memory_mb"] = round(peak / 2**20, 1) if peak is not None else None
        splits = [phase_split(step, ours, dev) for _ in range(min(3, args.repeats))]
        entry["phases_s"] = {k: statistics.median(s[k] for s in splits) for k in splits[0]}
        result["steps"][name] = entry
        del step, ours, ref

    if mm[used]:
        ceiling = statistics.median(mm[used]) / 1e9
        result["matmul_gflops"] = {used: round(ceiling, 1),
                                   **{other: "skipped (the step does not use it)"
                                      for other in ("fp32", "bf16") if other != used}}
        for entry in result["steps"].values():
            entry["efficiency"] = float(f"{entry['achieved_gflops'] / ceiling:.3g}")
    folder = _loader_folder(args.loader)
    if folder is not None:
        workers = cfg.data.workers if args.workers < 0 else args.workers
        _progress(f"loader: {folder} with {workers} workers")
        result["loader"] = loader_rate(cfg, folder, args.batch, args.crop, workers, registry)
        for entry in result["steps"].values():
            entry["loader_ratio"] = round(result["loader"]["images_per_s"] /
                                          entry["images_per_s"], 2)
    return result


def _progress(text: str) -> None:
    print(f"plfw bench: {text}", file=sys.stderr, flush=True)


def _summarise(times: list[float], batch: int) -> dict[str, Any]:
    s = statistics.median(times)
    return {"s_per_step": round(s, 4), "images_per_s": round(batch / s, 3),
            "s_min": round(min(times), 4), "s_all": [round(t, 4) for t in times]}


def _loader_folder(option: str) -> Path | None:
    if option.lower() == "none":
        return None
    if option:
        path = Path(option).expanduser()
        if not path.is_dir():
            raise UserError(f"bench --loader: {path} is not a folder")
        return path
    return next((f for f in LOADER_FOLDERS if f.is_dir()), None)


def _argv(args: argparse.Namespace) -> list[str]:
    out = [f"--config {args.config}", f"--steps {args.steps}", f"--batch {args.batch}",
           f"--crop {args.crop}", f"--repeats {args.repeats}", f"--warmup {args.warmup}"]
    for key in ("device", "precision", "channels_last", "compile"):
        value = getattr(args, key)
        if value != "auto":
            out.append(f"--{key.replace('_', '-')} {value}")
    return out + list(args.overrides)


def report(result: dict[str, Any]) -> str:
    """A short human-readable summary of ``run``'s result."""
    m = result["machine"]
    lines = [f"{m['cpu']} ({m['cores']} cores, {m['torch_threads']} threads), "
             f"{m.get('gpu', m['device'])}, torch {m['torch']}",
             f"settings: {result['settings']}"]
    if "matmul_gflops" in result:
        g = result["matmul_gflops"]
        lines.append("matmul 2048^2: " + ", ".join(
            f"{k} {v} GFLOP/s" if isinstance(v, float) else f"{k} {v}" for k, v in g.items()))
    for name, e in result["steps"].items():
        line = f"{name:>6}: {e['images_per_s']:8.2f} img/s ({e['s_per_step']} s/step)"
        if "speedup" in e:
            line += (f"  reference {e['reference_images_per_s']:.2f} img/s  "
                     f"speedup x{e['speedup']:.2f} (fastest steps: x{e['speedup_best']:.2f})")
        lines.append(line)
        lines.append(f"        {e['gflop_per_step']} GFLOP/step, {e['achieved_gflops']} GFLOP/s"
                     f" (efficiency {e.get('efficiency', '-')}), peak memory "
                     f"{e['peak_memory_mb']} MB")
        lines.append(f"        split [s]: {e['phases_s']}")
        if "loader_ratio" in e:
            lines.append(f"        loader / step consumption: x{e['loader_ratio']}")
    if "loader" in result:
        lo = result["loader"]
        lines.append(f"loader: {lo['images_per_s']} img/s with {lo['workers']} workers on "
                     f"{lo['folder']}")
    return "\n".join(lines)

"""Where a training step's time goes: torch.profiler over the trainer's own step, by operator.

    python benchmarks/profile_step.py [--steps mse,srgan] [--precision auto|fp32|bf16]
                                      [--channels-last auto|true|false] [--repeats 3] [--json]
                                      [--compile auto|false|activations]
                                      [--config CONFIG] [--batch 16] [--crop 96]

The step is the one ``plfw bench`` times (:func:`plfw.assembly.bench_step` on the paper's SRGAN
config, batch 16 of 96x96 unless told otherwise), warmed up, then profiled over ``--repeats``
steps. Operators are grouped into the classes that decide what can still be won: convolutions
(forward and backward: FLOP-bound), batch norm, activations, pixel shuffle and copies
(memory-bound), the optimizer, and the rest. Self CPU time per class and the top operators are
printed; ``--json`` gives the same as one object. docs/bench.md quotes its output.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from plfw.assembly import bench_step
from plfw.bench.command import DEFAULT_CONFIG
from plfw.bench.timing import phase_for
from plfw.core.config import load_config
from plfw.core.plugins import load_plugins
from plfw.device.runtime import make_runtime

#: operator-name fragments -> class, first match wins
CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("convolution", ("convolution", "conv2d", "mkldnn_conv")),
    ("compiled PReLU", ("compiledfunction", "compiledfxgraph")),
    ("matmul", ("addmm", "mm", "linear", "matmul")),
    ("batch norm", ("batch_norm",)),
    ("activation", ("prelu", "relu", "leaky", "sigmoid")),
    ("pixel shuffle", ("pixel_shuffle", "pixel_unshuffle")),
    ("optimizer", ("adam", "_foreach", "lerp")),
    ("copy / layout", ("copy_", "contiguous", "to_copy", "clone", "cat", "empty_like")),
    ("loss and elementwise", ("mse", "add", "mul", "sub", "div", "sum", "mean", "pow", "sqrt")),
)


def classify(name: str) -> str:
    lowered = name.lower()
    for cls, fragments in CLASSES:
        if any(f in lowered for f in fragments):
            return cls
    return "other"


def profile_step(step_name: str, precision: str, channels_last: str, repeats: int,
                 batch: int, crop: int, config: str | Path = DEFAULT_CONFIG,
                 compile: str = "auto") -> dict[str, Any]:
    """Self CPU seconds per operator class and the top 12 operators, per step."""
    cfg = load_config(config, [])
    rt = make_runtime("cpu", precision, channels_last, compile, 0)
    _, call = bench_step(load_plugins().registry, cfg, phase_for(cfg, step_name), rt, batch,
                         crop)
    for _ in range(2):
        call()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            call()
    per_class: dict[str, float] = defaultdict(float)
    ops = []
    for e in prof.key_averages():
        seconds = e.self_cpu_time_total / 1e6 / repeats
        if seconds <= 0:
            continue
        per_class[classify(e.key)] += seconds
        ops.append((seconds, e.key))
    total = sum(per_class.values())
    ops.sort(reverse=True)
    return {
        "step": step_name, "bf16": rt.bf16, "channels_last": rt.channels_last,
        "threads": torch.get_num_threads(), "s_per_step": round(total, 4),
        "classes": {k: {"s": round(v, 4), "share": round(v / total, 3)}
                    for k, v in sorted(per_class.items(), key=lambda kv: -kv[1])},
        "top": [{"op": k, "s": round(s, 4), "share": round(s / total, 3)} for s, k in ops[:12]],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", default="mse,srgan")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--channels-last", default="auto", choices=("auto", "true", "false"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--json", action="store_true")
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--compile", default="auto", choices=("auto", "false", "activations"),
                   help="auto: PReLU compiled alone in the config's long phases (plfw.nn.fused)")
    args = p.parse_args(argv)
    results = []
    for name in [s.strip() for s in args.steps.split(",") if s.strip()]:
        print(f"profiling {name} ...", file=sys.stderr)
        results.append(profile_step(name, args.precision, args.channels_last, args.repeats,
                                    args.batch, args.crop, args.config, args.compile))
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    for r in results:
        print(f"\n{r['step']}: {r['s_per_step']} s/step (self CPU time), bf16={r['bf16']}, "
              f"channels_last={r['channels_last']}, {r['threads']} threads")
        for cls, v in r["classes"].items():
            print(f"  {cls:22s} {v['s']:8.4f} s  {100 * v['share']:5.1f} %")
        print("  top operators:")
        for t in r["top"]:
            print(f"    {t['op']:44s} {t['s']:8.4f} s  {100 * t['share']:5.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())

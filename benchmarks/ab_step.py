"""What one setting is worth: the same training step built twice, timed interleaved.

    python benchmarks/ab_step.py --a compile=activations --b compile=false [--steps mse,srgan]
                                 [--repeats 11] [--warmup 2] [--json] [--config CONFIG]

``plfw bench`` compares plfw's step with a plain reference; this compares two variants of
plfw's own step (runtime settings ``precision``, ``channels_last``, ``compile``), built by the
trainer's code (:func:`plfw.assembly.bench_step`, batch 16 of 96x96 unless told otherwise) and run
a, b, a, b, ... so that both see the same load. It prints the medians, their ratio and the
median ratio of neighbouring steps ("paired"). docs/bench.md quotes its output.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

import torch

from plfw.assembly import bench_step
from plfw.bench.command import DEFAULT_CONFIG
from plfw.bench.timing import phase_for, timed
from plfw.core.config import load_config
from plfw.core.errors import UserError
from plfw.core.plugins import load_plugins
from plfw.device.runtime import make_runtime

SETTINGS = ("precision", "channels_last", "compile")


def parse_variant(text: str) -> dict[str, str]:
    """'compile=false,precision=fp32' -> runtime settings (unset ones stay 'auto')."""
    out = dict.fromkeys(SETTINGS, "auto")
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.replace("-", "_")
        if not sep or key not in SETTINGS:
            raise UserError(f"ab_step: '{item}' is not KEY=VALUE with KEY one of "
                            f"{', '.join(SETTINGS)}")
        out[key] = value
    return out


def compare(step_name: str, a: dict[str, str], b: dict[str, str], repeats: int, warmup: int,
            batch: int = 16, crop: int = 96, config: str = str(DEFAULT_CONFIG)) -> dict[str, Any]:
    """Median seconds per step of both variants, interleaved, and a's speed-up over b."""
    cfg = load_config(config, [])
    calls, settings = [], []
    for variant in (a, b):
        rt = make_runtime("cpu", variant["precision"], variant["channels_last"],
                          variant["compile"], 0)
        step, call = bench_step(load_plugins().registry, cfg, phase_for(cfg, step_name), rt,
                                batch, crop)
        calls.append(call)
        settings.append({"bf16": rt.bf16, "channels_last": rt.channels_last,
                         "compile": rt.compile, "compiled_prelu": step.fused})
    device = torch.device("cpu")
    for _ in range(warmup):
        for call in calls:
            call()
    times: list[list[float]] = [[], []]
    for _ in range(repeats):
        for t, call in zip(times, calls, strict=True):
            t.append(timed(call, device))
    med = [statistics.median(t) for t in times]
    return {"step": step_name, "a": settings[0], "b": settings[1],
            "a_s_per_step": round(med[0], 4), "b_s_per_step": round(med[1], 4),
            "speedup": round(med[1] / med[0], 3),
            "speedup_paired": round(statistics.median(
                tb / ta for ta, tb in zip(*times, strict=True)), 3),
            "a_s_all": [round(x, 4) for x in times[0]], "b_s_all": [round(x, 4) for x in times[1]]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", required=True, help="variant a, e.g. compile=activations")
    p.add_argument("--b", required=True, help="variant b, e.g. compile=false")
    p.add_argument("--steps", default="mse,srgan")
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        a, b = parse_variant(args.a), parse_variant(args.b)
    except UserError as e:
        p.error(str(e))
    results = []
    for name in [s.strip() for s in args.steps.split(",") if s.strip()]:
        print(f"ab_step: {name} ({args.repeats} interleaved pairs) ...", file=sys.stderr)
        results.append(compare(name, a, b, args.repeats, args.warmup, args.batch, args.crop,
                               args.config))
    if args.json:
        print(json.dumps({"a": args.a, "b": args.b, "results": results}, indent=1))
        return 0
    for r in results:
        print(f"{r['step']}: a ({args.a}) {r['a_s_per_step']} s/step, b ({args.b}) "
              f"{r['b_s_per_step']} s/step: a is {r['speedup']}x b (paired {r['speedup_paired']}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

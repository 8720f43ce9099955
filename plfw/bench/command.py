"""``plfw bench``, registered through ``plfw_register_commands`` as any plugin's command is
(entry point ``builtin_bench`` in pyproject.toml). The timing code is imported when the command
runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import plfw
from plfw.core.registry import Registry

HERE = Path(__file__).resolve().parent
#: the paper's SRGAN-VGG54 config, shipped in the package (equal to configs/paper/'s)
DEFAULT_CONFIG = HERE / "srgan_vgg54.yaml"


def _run(args: argparse.Namespace, registry: Registry) -> int:
    from plfw.bench.timing import report, run

    result = run(args, registry)
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


@plfw.hookimpl
def plfw_register_commands(register: Any) -> None:
    p = register("bench", _run, help="time the training step (and a reference step)",
                 description="Time the configured training steps on synthetic batches, "
                             "interleaved with plfw's plain eager fp32 reference step.")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--config", default=str(DEFAULT_CONFIG),
                   help="config whose phases give the steps (default: the paper's SRGAN-VGG54, "
                        "shipped with plfw, which holds the SRResNet-MSE phase too)")
    p.add_argument("--steps", default="mse,srgan",
                   help="comma-separated: mse, srgan or phase names (default: mse,srgan)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=96, help="HR crop side")
    p.add_argument("--repeats", type=int, default=5, help="timed steps each (median)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reference", default="",
                   help="reference step file with build(batch, hr, mse_only) (default: plfw's "
                        "own, plfw/bench/reference.py); 'none' skips it")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--channels-last", default="auto", choices=["auto", "true", "false"])
    p.add_argument("--compile", default="auto",
                   choices=["auto", "true", "false", "reduce-overhead", "activations"])
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--loader", default="",
                   help="image folder to time the data loader on (default: ../shared/data/"
                        "train/T91, else assets/photos/train, if there); 'none' skips it")
    p.add_argument("--workers", type=int, default=-1,
                   help="loader workers (default: the config's data.workers)")
    p.add_argument("--json", action="store_true", help="print one JSON object")

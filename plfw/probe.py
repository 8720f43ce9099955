"""What is fast on this machine, measured once and remembered: bf16 autocast and channels_last.

CPU flags say what a CPU can do, not what pays off: a CPU with AVX-512 BF16 runs bf16 convolutions
several times faster than fp32, one without it about a hundred times slower, and channels_last
helps oneDNN on some CPUs and torch versions and not on others. ``auto`` settings therefore come
from a short measurement (well under a second where bf16 is fast; bounded where it is slow): a
3x3 convolution layer of the size SRResNet uses, forward and backward, timed in fp32 and bf16 and
in both memory formats. The result is cached per CPU model, torch version and thread count in
``$PLFW_CACHE_DIR`` (default ``~/.cache/plfw``) as ``probe.json``; delete it to measure again,
or set ``train.precision`` / ``train.channels_last`` explicitly to skip it.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import time
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: bf16 (or channels_last) is chosen when it is at least this much faster than the alternative.
MIN_SPEEDUP = 1.2
CACHE_FILE = "probe.json"


def cache_dir() -> Path:
    """``$PLFW_CACHE_DIR``, else ``$XDG_CACHE_HOME/plfw``, else ``~/.cache/plfw``."""
    if os.environ.get("PLFW_CACHE_DIR"):
        return Path(os.environ["PLFW_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "plfw"


def machine_key() -> str:
    """CPU model, torch version and threads: what the measurement depends on."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def measure(budget: float = 2.0, rounds: int = 5) -> dict[str, Any]:
    """Time one SRResNet-sized conv layer (forward + backward) in fp32 / bf16 x contiguous /
    channels_last, interleaved (A B C D A B C D ...) so that load from other processes hits all
    four alike, for at least ``rounds`` rounds and until ``budget`` seconds have passed; the
    fastest run per variant counts (other load only ever adds time). bf16 is dropped after one
    round when it is over 10x slower (CPUs without bf16 units), which bounds the time there."""
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 64, 3, padding=1)
    x0 = torch.randn(4, 64, 48, 48)

    def variant(bf16: bool, last: bool) -> Any:
        fmt = torch.channels_last if last else torch.contiguous_format
        layer = copy.deepcopy(conv).to(memory_format=fmt)
        x = x0.contiguous(memory_format=fmt).requires_grad_(True)

        def run() -> float:
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                y = layer(x)
            y.float().square().mean().backward()
            return time.perf_counter() - t

        run()  # warm-up: oneDNN picks its kernels
        return run

    runs = {(b, c): variant(b, c) for b in (False, True) for c in (False, True)}
    times: dict[tuple[bool, bool], list[float]] = {k: [] for k in runs}
    started, i = time.perf_counter(), 0
    while i < rounds or (time.perf_counter() - started < budget and i < 100):
        for key, run in list(runs.items()):
            times[key].append(run())
        if i == 0 and times[(True, False)][0] > 10 * times[(False, False)][0]:
            runs = {k: r for k, r in runs.items() if not k[0]}
        i += 1
    med = {k: min(v) for k, v in times.items()}
    bf16_speedup = med[(False, False)] / med[(True, False)]
    use_bf16 = bf16_speedup >= MIN_SPEEDUP
    last_speedup = med[(use_bf16, False)] / med[(use_bf16, True)]
    return {"seconds": {f"{'bf16' if b else 'fp32'}{'_channels_last' if c else ''}": round(v, 5)
                        for (b, c), v in med.items()},
            "bf16_speedup": round(bf16_speedup, 3), "channels_last_speedup": round(last_speedup, 3),
            "bf16": use_bf16, "channels_last": last_speedup >= MIN_SPEEDUP,
            "rounds": i, "measured": time.time()}


@cache
def cpu_choice() -> dict[str, Any]:
    """This machine's measured choice (cached on disk per machine key, and in memory)."""
    path = cache_dir() / CACHE_FILE
    key = machine_key()
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    entry = known.get(key)
    if isinstance(entry, dict) and {"bf16", "channels_last"} <= set(entry):
        return entry
    entry = measure()
    known[key] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home still gets the measured choice, just not remembered
    return entry

"""What is fast on this machine, measured once and remembered: bf16 autocast and channels_last.

CPU flags say what a CPU can do, not what pays off: a 2-core AMD EPYC with AVX-512 BF16 ran the
SRGAN step 2.3x faster in bf16, a 2-core Intel Xeon with the same flag 1.5x slower, a CPU
without it runs bf16 convolutions about a hundred times slower than fp32, and channels_last
helps oneDNN on some CPUs and torch versions and not on others. ``auto`` settings therefore come
from a short measurement (a few seconds): first one 3x3 convolution in fp32 and bf16, so that a
CPU without fast bf16 spends one slow layer on it and no more; then a small network shaped like
SRResNet (residual conv-BN-PReLU blocks, a sub-pixel x2 stage, the 9x9 tail) feeding a frozen
VGG-shaped loss network, forward and backward, in both memory formats (and in bf16 where the
first step found it viable). A lone convolution is not enough: on a 2-core AMD EPYC it showed
channels_last 1.06x faster while the real training step was 1.21x faster (``docs/bench.md``),
because the gain lies in the batch norm, PReLU, pixel-shuffle and tail layers around the
convolutions; nor is the generator alone: in bf16 it showed channels_last 1.047x (below the
threshold) while the SRGAN step ran 1.18x faster with it. The result is cached per CPU
model, torch version and thread count in ``$PLFW_CACHE_DIR`` (default ``~/.cache/plfw``) as
``probe.json``; delete it to measure again, or set ``train.precision`` /
``train.channels_last`` explicitly to skip it.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: bf16 is chosen when it is at least this much faster than fp32: it changes the numerics, so it
#: has to pay clearly.
MIN_SPEEDUP = 1.2
#: channels_last only changes the memory layout, so a smaller (but above-noise) gain suffices.
MIN_LAYOUT_SPEEDUP = 1.05
CACHE_FILE = "probe.json"
#: part of the cache key: a new measurement method measures again
VERSION = 4


def cache_dir() -> Path:
    """``$PLFW_CACHE_DIR``, else ``$XDG_CACHE_HOME/plfw``, else ``~/.cache/plfw``."""
    if os.environ.get("PLFW_CACHE_DIR"):
        return Path(os.environ["PLFW_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "plfw"


#: the CPU flags that decide which kernels oneDNN can use; part of the cache key because virtual
#: machines often report only "Intel(R) Xeon(R) Processor" as the model, for CPUs as different
#: as the one of 2026-11-26 (its bf16 SRGAN step 3.9x the fp32 reference) and the one of
#: 2026-12-03 without AMX (bf16 1.5x slower than fp32)
KEY_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def machine_key() -> str:
    """The machine and the probe's version: what a cached measurement depends on."""
    return f"{machine()} | probe {VERSION}"


def machine() -> str:
    """CPU model and its decisive flags, torch version and threads: what a speed depends on."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            name, _, value = line.partition(":")
            fields.setdefault(name.strip(), value.strip())  # the first CPU's entry
    except OSError:
        pass
    model = fields.get("model name") or platform.processor() or platform.machine()
    have = set(fields.get("flags", "").split())
    flags = " ".join(f for f in KEY_FLAGS if f in have)
    return (f"{model}{f' ({flags})' if flags else ''} | torch {torch.__version__}"
            f" | {torch.get_num_threads()} threads")


def _step_shaped_net(channels: int = 64, blocks: int = 2) -> nn.Module:
    """SRResNet's layer mix at a fraction of its depth (x2, to keep the probe short), followed
    by a frozen VGG-shaped loss network (conv-ReLU at the SR size, a max-pool, a wider conv):
    the loss network is most of the SRGAN step, and without it the probe missed its
    channels_last gain (docs/bench.md, probe 4)."""
    def block() -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
            nn.PReLU(channels), nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Sequential(nn.Conv2d(3, channels, 9, padding=4), nn.PReLU(channels))
            self.blocks = nn.ModuleList(block() for _ in range(blocks))
            self.up = nn.Sequential(nn.Conv2d(channels, 4 * channels, 3, padding=1),
                                    nn.PixelShuffle(2), nn.PReLU(channels),
                                    nn.Conv2d(channels, 3, 9, padding=4))
            self.loss_net = nn.Sequential(
                nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                nn.MaxPool2d(2), nn.Conv2d(channels, 2 * channels, 3, padding=1),
                nn.ReLU(inplace=True)).requires_grad_(False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.head(x)
            for b in self.blocks:
                x = x + b(x)
            return self.loss_net(self.up(x))

    return Net()


def _timer(net: nn.Module, x0: torch.Tensor, bf16: bool, last: bool) -> Callable[[], float]:
    """A forward + backward run of a copy of ``net`` in one precision and layout; one
    untimed call first (oneDNN picks its kernels)."""
    fmt = torch.channels_last if last else torch.contiguous_format
    layer = copy.deepcopy(net).to(memory_format=fmt)
    x = x0.contiguous(memory_format=fmt).requires_grad_(x0.shape[1] > 3)

    def run() -> float:
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = layer(x)
        y.float().square().mean().backward()
        return time.perf_counter() - t

    run()
    return run


def _fastest(runs: dict[Any, Callable[[], float]], rounds: int, budget: float
             ) -> tuple[dict[Any, float], int]:
    """Interleaved (A B C A B C ...) so that other load hits every variant alike, for at least
    ``rounds`` rounds and until ``budget`` seconds; the fastest run of each counts (other load
    only ever adds time)."""
    times: dict[Any, list[float]] = {k: [] for k in runs}
    started, i = time.perf_counter(), 0
    while i < rounds or (time.perf_counter() - started < budget and i < 100):
        for key, run in runs.items():
            times[key].append(run())
        i += 1
    return {k: min(v) for k, v in times.items()}, i


def choose(seconds: dict[tuple[bool, bool], float]) -> dict[str, Any]:
    """The choice from timings keyed (bf16, channels_last): bf16 when the best bf16 layout beats
    the best fp32 layout by ``MIN_SPEEDUP``, then channels_last when it beats contiguous in that
    precision by ``MIN_LAYOUT_SPEEDUP``. Comparing the best of each precision, not one fixed
    layout, matters: on a 2-core Intel Xeon with AVX-512 BF16 (no AMX) contiguous bf16 was
    1.34x faster than contiguous fp32 while fp32 channels_last was the fastest of all, and the
    SRGAN step ran 1.5x faster in fp32 than in bf16."""
    def best(bf16: bool) -> float:
        return min(v for (b, _), v in seconds.items() if b == bf16)

    bf16_speedup = best(False) / best(True) if (True, False) in seconds else 0.0
    use_bf16 = bf16_speedup >= MIN_SPEEDUP
    last_speedup = seconds[(use_bf16, False)] / seconds[(use_bf16, True)]
    return {"bf16_speedup": round(bf16_speedup, 3), "channels_last_speedup": round(last_speedup, 3),
            "bf16": use_bf16, "channels_last": last_speedup >= MIN_LAYOUT_SPEEDUP}


def measure(budget: float = 2.0, rounds: int = 5) -> dict[str, Any]:
    """Gate, then choose: one SRResNet-sized conv layer once in fp32 and once in bf16 (bf16 is
    out when it is over 10x slower, which bounds the time on CPUs without bf16 units);
    then the small SRResNet-shaped network in fp32 / bf16 x contiguous / channels_last."""
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 64, 3, padding=1)
    x_conv = torch.randn(4, 64, 48, 48)
    gate = {b: _timer(conv, x_conv, b, False)() for b in (False, True)}
    slow_bf16 = gate[True] > 10 * gate[False]
    net, x_net = _step_shaped_net(), torch.rand(4, 3, 24, 24)
    precisions = (False,) if slow_bf16 else (False, True)
    runs = {(b, c): _timer(net, x_net, b, c) for b in precisions for c in (False, True)}
    med, i = _fastest(runs, rounds, budget)
    choice = choose(med)
    if slow_bf16:
        choice["bf16_speedup"] = round(gate[False] / gate[True], 3)
    return {"seconds": {f"{'bf16' if b else 'fp32'}{'_channels_last' if c else ''}": round(v, 5)
                        for (b, c), v in med.items()},
            **choice,
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

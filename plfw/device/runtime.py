"""Where and how fast to run: device, precision, memory format, threads, distributed ranks.

Decisions are made once from the config's ``train`` section and the hardware, so the trainer,
``bench`` and ``upscale`` agree on them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn

from plfw.core.errors import UserError


@cache
def cpu_has_fast_bf16() -> bool:
    """AVX-512 BF16 or AMX: the CPUs on which bf16 autocast pays off."""
    try:
        flags = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    bf16: bool
    channels_last: bool
    compile: bool
    rank: int = 0
    world_size: int = 1
    #: torch.compile mode: "default" or "reduce-overhead" (CUDA graphs: for small steps on a
    #: large GPU, where kernel launches and host work dominate)
    compile_mode: str = "default"
    #: PReLU compiled on its own in training steps (``plfw.nn.fused``): "off", "long" (phases of
    #: at least ``LONG_PHASE`` steps, where the seconds of warm-up are repaid) or "always"
    activations: str = "off"
    #: fp16 autocast with a gradient scaler (``train.precision: fp16``; for CUDA, and on the
    #: CPU for checks: slow there without AVX512-FP16 or AMX-FP16)
    fp16: bool = False

    @property
    def precision(self) -> str:
        """"bf16", "fp16" or "fp32": what autocast runs the networks in."""
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "fp32"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        if not (self.bf16 or self.fp16):
            return contextlib.nullcontext()
        return torch.autocast(self.device.type,
                              dtype=torch.bfloat16 if self.bf16 else torch.float16)

    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def to(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=self.memory_format()) if x.dim() == 4 else x

    def rank0_decides(self, mine: bool) -> bool:
        """Rank 0's answer on every rank (one broadcast), so all ranks stop together."""
        if not self.distributed:
            return mine
        flag = torch.tensor([float(mine)], device=self.device)
        torch.distributed.broadcast(flag, src=0)
        return bool(flag.item())

    def rank0_int(self, mine: int) -> int:
        """Rank 0's integer on every rank (one broadcast): e.g. which checkpoint all resume."""
        if not self.distributed:
            return mine
        value = torch.tensor([mine], dtype=torch.int64, device=self.device)
        torch.distributed.broadcast(value, src=0)
        return int(value.item())

    def wrap(self, module: nn.Module, sync_batchnorm: bool = False) -> nn.Module:
        """``module`` in DistributedDataParallel (once) in a distributed run; else as it is.
        Only trained networks go here: a frozen loss network has nothing to reduce."""
        ddp = nn.parallel.DistributedDataParallel
        if not self.distributed or isinstance(module, ddp):
            return module
        if sync_batchnorm:
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return ddp(module, device_ids=[self.device.index] if self.device.type == "cuda" else None)


#: ``train.precision`` values: fp32, bf16 autocast, or fp16 autocast with a gradient scaler
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: ``train.compile`` values beyond auto / true / false: torch.compile with that mode, or
#: "activations" (only PReLU compiled, ``plfw.nn.fused``)
COMPILE_MODES = ("reduce-overhead", "activations")
#: phases this long compile PReLU alone under ``compile: auto`` on the CPU
LONG_PHASE = 5000


def _flag(value: str | bool, default: bool, what: str) -> bool:
    text = str(value).lower()
    if text == "auto":
        return default
    if text in {"true", "1", "yes", "on"}:
        return True
    if text in {"false", "0", "no", "off"}:
        return False
    extra = f", {', '.join(COMPILE_MODES)}" if what == "compile" else ""
    raise UserError(f"train.{what}: expected auto, true, false{extra}, got {value!r}")


def pick_device(name: str) -> torch.device:
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"train.device: unknown device '{name}' (use auto, cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device: CUDA was asked for but is not available; use device=cpu")
    return device


def elastic_restart() -> int:
    """How many times torchrun's elastic agent restarted this worker group (0: first start).
    After a restart every rank must continue the run instead of starting it again."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def init_distributed(rt: Runtime) -> None:
    """Join the process group (NCCL on CUDA, gloo on the CPU). After a torchrun restart the
    group meets under a prefix of its own: the agent keeps one store across restarts, and a
    new rank could otherwise read an address the dead attempt left there and fail to
    connect."""
    backend = "nccl" if rt.device.type == "cuda" else "gloo"
    restarts = elastic_restart()
    if not restarts or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        torch.distributed.init_process_group(backend)
        return
    from datetime import timedelta

    store = torch.distributed.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                                       rt.world_size, is_master=False,
                                       timeout=timedelta(minutes=10))
    torch.distributed.init_process_group(
        backend, store=torch.distributed.PrefixStore(f"plfw/restart{restarts}/", store),
        rank=rt.rank, world_size=rt.world_size)


def make_runtime(device: str = "auto", precision: str = "auto", channels_last: str | bool = "auto",
                 compile: str | bool = "auto", threads: int = 0) -> Runtime:
    """Resolve 'auto' settings: bf16 and channels_last on CUDA (fp16 only when asked for: it
    needs a gradient scaler, which the step keeps per optimizer); on the CPU whatever the one-time
    probe measured to be faster (``plfw.device.probe``); torch.compile on CUDA only (on a few CPU
    cores its warm-up outlasts short runs); on the CPU only PReLU compiled, in long phases."""
    if threads > 0:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    if precision not in PRECISIONS:
        raise UserError(f"train.precision: expected auto, fp32, bf16 or fp16, got "
                        f"{precision!r}")
    last = _flag(channels_last, True, "channels_last") if str(channels_last) != "auto" else None
    probed = None
    if dev.type == "cpu" and (precision == "auto" or last is None):
        from plfw.device.probe import cpu_choice

        probed = cpu_choice()  # measured once per machine (plfw.device.probe)
    bf16 = (precision == "bf16" if precision != "auto"
            else dev.type == "cuda" or bool(probed and probed["bf16"]))
    if last is None:
        last = dev.type == "cuda" or bool(probed and probed["channels_last"])
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    mode, activations, text = "default", "off", str(compile).lower()
    if text == "activations":
        compile, activations = False, "always"
    elif text in COMPILE_MODES:
        mode, compile = text, True
    elif text == "auto" and dev.type == "cpu":
        activations = "long"
    return Runtime(dev, bf16, last, _flag(compile, dev.type == "cuda", "compile"), rank, world,
                   mode, activations, fp16=precision == "fp16")


@contextlib.contextmanager
def eval_mode(*modules: torch.nn.Module) -> Iterator[None]:
    """Temporarily switch modules to eval mode, restoring each one's previous mode."""
    previous = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, was in zip(modules, previous, strict=True):
            m.train(was)


def unwrap(module: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (or the module itself)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module

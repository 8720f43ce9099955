"""De-grid a bundled-format generator: fine-tune its upsampling layers against spectral peaks.

    python scripts/degrid.py TEACHER DATA OUT [--steps N] [--weight W] [--lr LR]
                             [--channels rgb|luma] [--device auto|cpu|cuda]

The trunk (head, residual blocks, fuse) stays frozen and shared with TEACHER; only the two
sub-pixel stages and the tail, which are where a grid comes from (pixel shuffle makes the
output depend on position modulo 4), are trained on random 96x96 crops of DATA/train with
loss = MSE(student, teacher) on [0, 1] + W * ``peak`` (the ``periodic_db`` metric as a loss,
plugins/plfw_builtins/metrics/periodic.py), so the student keeps the teacher's look and loses its
grid. The peak is taken on each colour channel (``--channels rgb``, the default): on luma
alone (``luma``, what the SRGAN bundled on 2026-12-04 was de-gridded with) the step can move
the grid into colours that cancel in luma, which periodic_db_rgb and grey images show.
Resumable: OUT/state.pt is written atomically every --every updates, with a Set5
validation line (PSNR-Y, periodic_db) in OUT/log.jsonl; OUT/generator.pt is the result in
the format of plfw/weights.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from plfw_builtins.datasets.folders import HRFolder, HRFolderParams
from plfw_builtins.losses.periodic import PeakLoss

from plfw.assembly import build_metrics
from plfw.core.plugins import load_plugins
from plfw.device.runtime import pick_device
from plfw.evaluation.evaluate import Pair, evaluate, load_pairs
from plfw.inference.generators import open_generator, to_unit
from plfw.storage.checkpoint import atomic_torch_save


def trunk(g: torch.nn.Module, lr: torch.Tensor) -> torch.Tensor:
    x = g.head(lr)
    return x + g.fuse(g.blocks(x))


def tail(g: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    for stage in g.upsample:
        x = stage(x)
    return g.tail(x)


VAL_METRICS = ("psnr_y", "periodic_db", "periodic_db_rgb")


def validate(g: torch.nn.Module, out_range: tuple[float, float], pairs: list[Pair],
             metrics: dict) -> dict:
    dev = next(g.parameters()).device
    with torch.no_grad():
        scores = evaluate(lambda lr: to_unit(g(lr[None].to(dev)), out_range)[0].cpu(), pairs, 4,
                          metrics=metrics)
    return {name: scores[name] for name in metrics}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("teacher")
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--weight", type=float, default=1e-3)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--channels", choices=("rgb", "luma"), default="rgb")
    ap.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda")
    a = ap.parse_args()
    torch.manual_seed(0)
    registry = load_plugins().registry
    dev = pick_device(a.device)
    loaded = open_generator(a.teacher, registry)
    teacher = loaded.module.eval().requires_grad_(False).to(dev)
    student = copy.deepcopy(teacher)
    params = [*student.upsample.parameters(), *student.tail.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=a.lr)
    a.out.mkdir(parents=True, exist_ok=True)
    state_file, step = a.out / "state.pt", 0
    if state_file.exists():
        st = torch.load(state_file, weights_only=False, map_location=dev)
        student.load_state_dict(st["state_dict"])
        opt.load_state_dict(st["opt"])
        step = st["step"]
        print(f"resumed at update {step}", flush=True)
    data = HRFolder(HRFolderParams(root=str(a.data / "train"), recursive=True, crop=96))
    loader = torch.utils.data.DataLoader(data, batch_size=a.batch, shuffle=True,
                                         drop_last=True, num_workers=0)
    set5 = a.data / "benchmarks" / "Set5"
    val_pairs = load_pairs(set5 / "HR", set5 / "LR_bicubic" / "X4", 4)  # read once
    val_metrics = build_metrics(registry, VAL_METRICS, 4)
    peak, low = PeakLoss(4, 64, a.channels), loaded.out_range
    t0 = time.time()
    while step < a.steps:
        for lr_img, hr in loader:
            lr_img, hr = lr_img.to(dev), hr.to(dev)
            for group in opt.param_groups:  # cosine decay to zero over --steps
                group["lr"] = a.lr * 0.5 * (1 + math.cos(math.pi * step / a.steps))
            with torch.no_grad():
                feats = trunk(teacher, lr_img)
                target = to_unit(tail(teacher, feats), low)
            sr = to_unit(tail(student, feats), low)
            mse = F.mse_loss(sr, target)
            pk = peak(sr, hr)
            loss = mse + a.weight * pk
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % 10 == 0:
                print(f"update {step}/{a.steps} mse {mse.item():.2e} peak {pk.item():.3f} "
                      f"{(time.time() - t0) / 60:.1f} min", flush=True)
            if step % a.every == 0 or step == a.steps:
                val = validate(student, low, val_pairs, val_metrics)
                line = {"step": step, "mse_to_teacher": mse.item(), "peak": pk.item(),
                        **{f"set5_{k}": v for k, v in val.items()}}
                with open(a.out / "log.jsonl", "a") as f:
                    f.write(json.dumps(line) + "\n")
                print(line, flush=True)
                atomic_torch_save({"state_dict": student.state_dict(), "opt": opt.state_dict(),
                                   "step": step}, state_file)
            if step >= a.steps:
                break
    src = torch.load(loaded.path, weights_only=False)
    result = {**src, "state_dict": {k: v.cpu() for k, v in student.state_dict().items()},
              "phase": "degrid",
              "step": src.get("step", 0) + step}
    atomic_torch_save(result, a.out / "generator.pt")
    print(f"wrote {a.out / 'generator.pt'}", file=sys.stderr)


if __name__ == "__main__":
    main()

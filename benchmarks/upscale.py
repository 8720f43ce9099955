"""Inference speed of ``plfw upscale``'s model path, side by side with plfw 0.1's path.

    python benchmarks/upscale.py [--model srgan] [--image assets/photos/train/astronaut.png]
                                 [--repeats 3] [--threads 0] [--json]

Each variant upscales the same image with :func:`plfw.inference.tiling.upscale_tiled`; variants run
interleaved (a, b, c, a, b, c, ...) after one untimed warm-up each, and the table gives the
median output megapixels per second. "0.1" is the path plfw 0.1 shipped (the live module with
SRResNet's layers in the paper's order, NCHW, 0.1's default 256-pixel tiles; fp32, and bf16
where the probe finds bf16 fast); "now" is ``plfw upscale``'s path (the frozen inference copy
of :mod:`plfw.inference.frozen`, channels_last). Every output is compared with
the 0.1 path in fp32: the largest difference and the share of 8-bit values that differ, in
1/255 steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from torch import nn

from plfw.core.plugins import load_plugins
from plfw.device.probe import cpu_choice
from plfw.device.runtime import make_runtime
from plfw.imaging.images import load_picture
from plfw.imaging.imresize import imresize
from plfw.inference.frozen import frozen_runner
from plfw.inference.generators import batch_runner, load_generator
from plfw.inference.tiling import upscale_tiled


def paper_order(module: nn.Module) -> nn.Module:
    """plfw 0.1's SRResNet forward: the layers in the paper's order (the 9x9 tail after the
    last pixel shuffle, at full resolution), on the same weights."""

    class PaperOrder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = module

        def forward(self, lr: torch.Tensor) -> torch.Tensor:
            net = self.net
            x = net.head(lr)
            x = x + net.fuse(net.blocks(x))
            out = net.tail(net.upsample(x))
            if net.residual == "bicubic":
                low, high = net.output_range
                with torch.autocast(lr.device.type, enabled=False):
                    out = out + low + (high - low) * imresize(lr.float(), scale=net.scale)
            return out

    return PaperOrder()


def variants(model: str, bf16_fast: bool, tile: int, tiles: list[int]) -> dict[str, tuple]:
    """name -> (runner, tile): plfw 0.1's path (the live module in the paper's layer order,
    NCHW) at the CLI's old default tile, then the frozen copy in channels_last at ``tiles``."""
    module, out_range = load_generator(model, load_plugins().registry)
    old = paper_order(module)
    out = {}
    precisions = ("fp32", "bf16") if bf16_fast else ("fp32",)
    for precision in precisions:
        rt = make_runtime("cpu", precision, "false")
        out[f"0.1 {precision} (NCHW, tile {tile})"] = (batch_runner(old, out_range, rt), tile)
    for precision in precisions:
        rt = make_runtime("cpu", precision, "true")
        for side in tiles:
            out[f"now {precision} (channels_last, tile {side})"] = (
                frozen_runner(module, out_range, rt), side)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="srgan")
    ap.add_argument("--image", default="assets/photos/train/astronaut.png")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tile", type=int, default=256, help="plfw 0.1 upscale's default")
    ap.add_argument("--tiles", default="256,384", help="tiles of the current path")
    ap.add_argument("--overlap", type=int, default=32, help="plfw upscale's default")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    probe = cpu_choice()
    lr = load_picture(a.image).colour.float()
    runs = variants(a.model, bool(probe["bf16"]), a.tile,
                    [int(t) for t in a.tiles.split(",")])
    outputs: dict[str, torch.Tensor] = {}
    for name, (run, tile) in runs.items():  # warm-up, and the outputs to compare
        print(f"warm-up: {name}", file=sys.stderr, flush=True)
        outputs[name] = upscale_tiled(run, lr, 4, tile=tile, overlap=a.overlap)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(a.repeats):
        for name, (run, tile) in runs.items():
            began = time.perf_counter()
            upscale_tiled(run, lr, 4, tile=tile, overlap=a.overlap)
            times[name].append(time.perf_counter() - began)
        print(f"repeat {r + 1}/{a.repeats} done", file=sys.stderr, flush=True)
    reference = outputs[f"0.1 fp32 (NCHW, tile {a.tile})"]
    megapixels = reference.shape[1] * reference.shape[2] / 1e6
    rows = []
    for name in runs:
        diff = (outputs[name] - reference).abs()
        levels = ((outputs[name] * 255).round() - (reference * 255).round()).abs()
        median = statistics.median(times[name])
        rows.append({"variant": name, "s_median": round(median, 3),
                     "mp_per_s": round(megapixels / median, 3),
                     "max_diff_255": round(float(diff.max()) * 255, 3),
                     "share_8bit_differs": float((levels > 0).float().mean()),
                     "share_8bit_off_by_2": float((levels > 1).float().mean()),
                     "s_all": [round(t, 3) for t in times[name]]})
    old = {r["variant"].split()[1]: r["mp_per_s"] for r in rows if r["variant"].startswith("0.1")}
    for r in rows:  # against plfw 0.1 in the same precision
        r["speedup"] = round(r["mp_per_s"] / old[r["variant"].split()[1]], 3)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "?") if sys.platform == "linux" else "?"
    result = {"machine": {"cpu": cpu, "threads": torch.get_num_threads(),
                          "torch": torch.__version__, "probe_bf16": bool(probe["bf16"])},
              "image": a.image, "output_megapixels": round(megapixels, 3), "rows": rows}
    if a.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"{a.image} -> {megapixels:.2f} MP, medians of {a.repeats}")
    print(f"{'variant':<38} {'MP/s':>7} {'vs 0.1':>7} {'max diff':>9} {'8-bit differs':>14}")
    for r in rows:
        print(f"{r['variant']:<38} {r['mp_per_s']:>7.3f} {r['speedup']:>6.2f}x "
              f"{r['max_diff_255']:>8.3f}  {100 * r['share_8bit_differs']:>12.4f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())

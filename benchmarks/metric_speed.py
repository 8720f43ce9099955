"""What scoring costs: seconds per image of each metric, and channels-last against contiguous
convolutions for the network metrics, timed interleaved on the same images.

    python benchmarks/metric_speed.py HR_FOLDER [--metrics st_lpips_alex,st_lpips_vgg,niqe]
                                      [--images 4] [--repeats 3] [--threads 2] [--json]

A study scores every final model on every image with every metric (``plfw ablate``), so a
metric's cost per image times images times jobs is part of the study's compute budget. The SR
image is the bicubic upscale of the MATLAB-bicubic LR, the border is 4 (as in the studies). For
the LPIPS/DISTS metrics each repeat runs the channels-last network (plfw's default) and a
contiguous copy one after the other, so both see the same load; it prints medians, their ratio
and the largest difference between the two variants' values.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

import plfw
from plfw.evaluation.evaluate import bicubic, load_pairs


def _seconds(metric: object, images: list[tuple[torch.Tensor, torch.Tensor]]
             ) -> tuple[float, list[float]]:
    start = time.perf_counter()
    values = [float(metric(sr, hr)) for sr, hr in images]  # type: ignore[operator]
    return (time.perf_counter() - start) / len(images), values


def _trunk(metric: object) -> torch.nn.Module | None:
    """The network of an LPIPS-family (``net.trunk``) or DISTS (``trunk``) metric, else None."""
    net = getattr(metric, "net", None)
    return getattr(net, "trunk", None) or getattr(metric, "trunk", None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("hr", help="folder of HR images (LR made by MATLAB bicubic)")
    ap.add_argument("--metrics", default="st_lpips_alex,st_lpips_vgg,haarpsi,gmsd,niqe,"
                                          "periodic_db,periodic_db_rgb,psnr_y,ssim_y")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    registry = plfw.load_registry()
    pairs = load_pairs(args.hr, None, 4, args.images)
    if not pairs:
        print(f"metric_speed: no images in {args.hr}", file=sys.stderr)
        return 2
    up = bicubic(4)
    images = [(up(p.lr).float(), p.hr) for p in pairs]
    rows = {}
    for name in filter(None, args.metrics.split(",")):
        fields = getattr(registry.get("metric", name).params, "__dataclass_fields__", {})
        spec = {"name": name, **({"border": 4} if "border" in fields else {})}
        metric = registry.build("metric", spec, "metric_speed")
        _seconds(metric, images[:1])  # warm-up (weights, first-call allocations)
        if _trunk(metric) is None:
            times = [_seconds(metric, images)[0] for _ in range(args.repeats)]
            rows[name] = {"seconds_per_image": statistics.median(times)}
            continue
        plain = registry.build("metric", spec, "metric_speed")
        plain.channels_last = False
        _trunk(plain).to(memory_format=torch.contiguous_format)
        _seconds(plain, images[:1])
        fast, slow, gap = [], [], 0.0
        for _ in range(args.repeats):
            t, a = _seconds(metric, images)
            fast.append(t)
            t, b = _seconds(plain, images)
            slow.append(t)
            gap = max(gap, max(abs(x - y) for x, y in zip(a, b, strict=True)))
        rows[name] = {"seconds_per_image": statistics.median(fast),
                      "contiguous_seconds_per_image": statistics.median(slow),
                      "speedup": statistics.median(slow) / statistics.median(fast),
                      "largest_value_difference": gap}
    if args.json:
        print(json.dumps({"threads": args.threads, "images": len(images), "metrics": rows}))
        return 0
    print(f"{len(images)} images from {args.hr}, {args.threads} threads, median of "
          f"{args.repeats}")
    for name, r in rows.items():
        line = f"{name:18s} {r['seconds_per_image']:7.3f} s/image"
        if "speedup" in r:
            line += (f"  (contiguous {r['contiguous_seconds_per_image']:.3f}: channels-last "
                     f"{r['speedup']:.2f}x, values differ by <= "
                     f"{r['largest_value_difference']:.1e})")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

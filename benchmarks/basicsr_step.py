"""plfw's training steps side by side with BasicSR's own, on the same batch.

    python benchmarks/basicsr_step.py [--batch 16] [--crop 128] [--repeats 5] [--json]

BasicSR (https://github.com/XPixelGroup/BasicSR, ``pip install basicsr``, 1.4.2 tested) is
not a dependency of plfw: install it in a separate environment that also sees plfw, e.g.

    python -m venv --system-site-packages /tmp/bsr && /tmp/bsr/bin/pip install wheel
    /tmp/bsr/bin/pip install --no-deps --no-build-isolation basicsr
    /tmp/bsr/bin/pip install addict yapf lmdb opencv-python-headless scikit-image scipy tqdm
    /tmp/bsr/bin/python benchmarks/basicsr_step.py

What is timed, per step kind (all on one fixed random batch, weights random):
- ``basicsr``: ``SRModel`` / ``SRGANModel.optimize_parameters`` as BasicSR's MSRResNet x4
  recipes set them up (MSRResNet, 16 blocks without batch norm; VGGStyleDiscriminator, which
  only accepts 128 or 256 pixels, hence the default crop; L1 pixel loss, VGG19 conv5_4 L1
  perceptual loss, vanilla GAN loss 5e-3; Adam; EMA 0.999). fp32, NCHW: BasicSR has no
  mixed-precision training option.
- ``plfw fp32``: plfw's own step (:func:`plfw.assembly.bench_step`) for the paper's SRGAN config
  (SRResNet with batch norm, the paper's discriminator, VGG54), forced to fp32.
- ``plfw auto``: the same with ``precision``/``channels_last`` as ``auto`` picks them here.

The networks differ (BasicSR's are its modified SRResNet and its discriminator), so besides
images/s the table gives each step's FLOPs (``torch.utils.flop_counter``) and achieved GFLOP/s:
how much of the machine each framework's step turns into arithmetic. Variants run interleaved
(a, b, c, a, b, c, ...) after warm-up steps; the figures are medians.

Two shims let BasicSR 1.4.2 import with torchvision >= 0.17: the removed
``torchvision.transforms.functional_tensor`` module is aliased, and its VGG builder's
``pretrained=`` argument (removed from torchvision) is dropped; VGG weights stay random.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch

from plfw.assembly import bench_step
from plfw.bench.command import DEFAULT_CONFIG
from plfw.bench.timing import count_flops, machine, phase_for, timed
from plfw.core.config import load_config
from plfw.core.plugins import load_plugins
from plfw.device.runtime import make_runtime

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def import_basicsr() -> Any:
    import torchvision
    import torchvision.transforms.functional as tf

    sys.modules.setdefault("torchvision.transforms.functional_tensor", tf)
    try:
        import basicsr.archs.vgg_arch as vgg_arch
        from basicsr.models.sr_model import SRModel
        from basicsr.models.srgan_model import SRGANModel
    except ImportError as e:
        sys.exit(f"basicsr_step.py: BasicSR is not importable ({e}); see this file's docstring "
                 f"for how to install it beside plfw")

    def vgg_builder(name: str) -> Callable[..., torch.nn.Module]:
        return lambda pretrained=False, **kw: getattr(torchvision.models, name)(weights=None, **kw)

    vgg_arch.vgg = SimpleNamespace(**{n: vgg_builder(n) for n in ("vgg11", "vgg13", "vgg16",
                                                                  "vgg19")})
    return SimpleNamespace(SRModel=SRModel, SRGANModel=SRGANModel)


def basicsr_options(gan: bool) -> dict[str, Any]:
    """BasicSR's MSRResNet / MSRGAN x4 training options (options/train/SRResNet_SRGAN)."""
    adam = {"type": "Adam", "lr": 2e-4 if not gan else 1e-4, "weight_decay": 0,
            "betas": [0.9, 0.99]}
    train: dict[str, Any] = {
        "ema_decay": 0.999, "optim_g": dict(adam),
        "scheduler": {"type": "MultiStepLR", "milestones": [50000], "gamma": 0.5},
        "pixel_opt": {"type": "L1Loss", "loss_weight": 1e-2 if gan else 1.0,
                      "reduction": "mean"},
    }
    opt: dict[str, Any] = {
        "num_gpu": 1 if torch.cuda.is_available() else 0, "is_train": True, "dist": False,
        "rank": 0, "world_size": 1,
        "network_g": {"type": "MSRResNet", "num_in_ch": 3, "num_out_ch": 3, "num_feat": 64,
                      "num_block": 16, "upscale": 4},
        "path": {"pretrain_network_g": None, "strict_load_g": True, "resume_state": None},
        "train": train,
    }
    if gan:
        opt["network_d"] = {"type": "VGGStyleDiscriminator", "num_in_ch": 3, "num_feat": 64}
        train["optim_d"] = dict(adam)
        train["perceptual_opt"] = {"type": "PerceptualLoss", "layer_weights": {"conv5_4": 1},
                                   "vgg_type": "vgg19", "use_input_norm": True,
                                   "range_norm": False, "perceptual_weight": 1.0,
                                   "style_weight": 0, "criterion": "l1"}
        train["gan_opt"] = {"type": "GANLoss", "gan_type": "vanilla", "real_label_val": 1.0,
                            "fake_label_val": 0.0, "loss_weight": 5e-3}
    return opt


def basicsr_step(bsr: Any, gan: bool, batch: int, crop: int) -> Callable[[], Any]:
    torch.manual_seed(0)
    model = (bsr.SRGANModel if gan else bsr.SRModel)(basicsr_options(gan))
    data = {"lq": torch.rand(batch, 3, crop // 4, crop // 4), "gt": torch.rand(batch, 3, crop,
                                                                              crop)}
    model.feed_data(data)
    count = iter(range(1, 10**9))
    return lambda: model.optimize_parameters(next(count))


def plfw_step(gan: bool, precision: str, batch: int, crop: int) -> Callable[[], Any]:
    cfg = load_config(DEFAULT_CONFIG, [])  # the paper's SRGAN-VGG54, as plfw bench times it
    rt = make_runtime("auto", precision, "auto", "auto")  # as plfw train: PReLU compiled
    phase = phase_for(cfg, "srgan" if gan else "mse")
    _, call = bench_step(load_plugins().registry, cfg, phase, rt, batch, crop)
    return call


def compare(variants: dict[str, Callable[[], Any]], batch: int, repeats: int,
            warmup: int) -> dict[str, Any]:
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(repeats):
        for name, fn in variants.items():
            times[name].append(timed(fn, DEVICE))
        print(f"basicsr_step: repeat {r + 1}/{repeats}", file=sys.stderr, flush=True)
    out: dict[str, Any] = {}
    for name, fn in variants.items():
        s = statistics.median(times[name])
        flops = count_flops(fn)
        out[name] = {"s_per_step": round(s, 4), "images_per_s": round(batch / s, 3),
                     "s_all": [round(t, 4) for t in times[name]],
                     "gflop_per_step": float(f"{flops / 1e9:.4g}"),
                     "achieved_gflops": float(f"{flops / 1e9 / s:.4g}")}
    base = out["basicsr"]["images_per_s"]
    for name, entry in out.items():
        entry["vs_basicsr"] = round(entry["images_per_s"] / base, 3)
        # ratios of neighbouring steps, which saw the same load: robust to slow drifts
        entry["vs_basicsr_paired"] = round(statistics.median(
            b / t for b, t in zip(times["basicsr"], times[name], strict=True)), 3)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=128, help="HR side; BasicSR's D needs 128/256")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", default="mse,srgan")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    bsr = import_basicsr()
    result: dict[str, Any] = {"machine": machine(DEVICE),
                              "command": "python benchmarks/basicsr_step.py " +
                                         " ".join(sys.argv[1:]),
                              "batch": args.batch, "crop": args.crop, "steps": {}}
    for kind in [s.strip() for s in args.steps.split(",") if s.strip()]:
        gan = kind == "srgan"
        print(f"basicsr_step: {kind}: building", file=sys.stderr, flush=True)
        variants = {"basicsr": basicsr_step(bsr, gan, args.batch, args.crop),
                    "plfw fp32": plfw_step(gan, "fp32", args.batch, args.crop),
                    "plfw auto": plfw_step(gan, "auto", args.batch, args.crop)}
        result["steps"][kind] = compare(variants, args.batch, args.repeats, args.warmup)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['machine']['cpu']}, {result['machine']['torch_threads']} threads, "
          f"batch {args.batch} of {args.crop}^2, medians of {args.repeats}")
    print(f"{'step':6} {'variant':10} {'img/s':>8} {'GFLOP/step':>11} {'GFLOP/s':>8} "
          f"{'vs BasicSR':>10} {'paired':>7}")
    for kind, rows in result["steps"].items():
        for name, e in rows.items():
            print(f"{kind:6} {name:10} {e['images_per_s']:8.3f} {e['gflop_per_step']:11.1f} "
                  f"{e['achieved_gflops']:8.1f} {e['vs_basicsr']:9.2f}x "
                  f"{e['vs_basicsr_paired']:6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

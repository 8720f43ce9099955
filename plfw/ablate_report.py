"""The ablation report: every run scored on the same images, as a table, crops and curves.

The perceptual distance (``d``) is LPIPS-shaped but has no learned weights: for each tap t of a
frozen network phi, the feature vector at every position is divided by its L2 norm over
channels, and d_t is the mean over positions of the squared L2 distance between the normalised
vectors of SR and HR (so 0 <= d_t <= 4); d is the mean of d_t over the taps and then over the
images. Images are compared whole, minus a border of ``scale`` pixels as for PSNR. A run is
only measured with networks its own losses did not use: a loss network is the easiest judge to
please.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from plfw.ablate import Ablation, _read_state, final_model, training_networks
from plfw.checkpoint import atomic_write_bytes
from plfw.errors import UserError

EPS = 1e-10


def _rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(3, -1, -1) if x.shape[0] == 1 else x


def perceptual_distance(net: torch.nn.Module, sr: torch.Tensor, hr: torch.Tensor,
                        border: int) -> float:
    """The report's distance between two CHW images in [0, 1] (see the module docstring)."""
    if border:
        sr, hr = sr[..., border:-border, border:-border], hr[..., border:-border, border:-border]
    device = next(iter(net.parameters()), torch.zeros(())).device
    batch = torch.stack([_rgb(sr), _rgb(hr)]).float().clamp(0, 1).to(device)
    with torch.inference_mode():
        feats = net(net.input_spec.convert(batch))
    per_tap = []
    for f in feats.values():
        f = f.float()
        f = f / (f.square().sum(1, keepdim=True).sqrt() + EPS)
        per_tap.append((f[0] - f[1]).square().sum(0).mean().item())
    return sum(per_tap) / len(per_tap)


def _spec_label(spec: dict[str, Any]) -> str:
    weights = spec.get("weights")
    taps = spec.get("taps")
    parts = [str(spec["name"])]
    if weights:
        parts.append(str(weights))
    if taps:
        parts.append("[" + ",".join(str(t) for t in taps) + "]")
    return " ".join(parts)


def _detail_crop(hr: torch.Tensor, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` window with the most detail (mean |Laplacian| of luma):
    where SR methods differ most, unlike a flat sky."""
    h, w = hr.shape[-2:]
    if h <= size or w <= size:
        return 0, 0
    y = _rgb(hr).mul(torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0)[None, None]
    lap = F.conv2d(y, torch.tensor([[[[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]]]), padding=1).abs()
    stride = max(1, size // 4)
    energy = F.avg_pool2d(lap, size, stride)[0, 0]
    index = int(energy.argmax())
    return (index // energy.shape[1]) * stride, (index % energy.shape[1]) * stride


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _starts_from(ab: Ablation, name: str, out_dir: Path) -> list[str]:
    """Other runs of this ablation whose exported model one of ``name``'s phases starts from."""
    found = []
    for phase in ab.configs[name].phases.values():
        if phase.init and phase.steps > 0:
            init = Path(phase.init).resolve()
            for other in ab.runs:
                if other != name and (out_dir / other).resolve() in init.parents:
                    found.append(other)
    return found


def _evaluate(ab: Ablation, out_dir: Path, device: str, log: Any) -> dict[str, Any]:
    import plfw
    from plfw.evaluate import bicubic, evaluate, load_pairs
    from plfw.generators import load_generator
    from plfw.plugins import get_plugins
    from plfw.runtime import make_runtime
    from plfw.trainer import runner

    pairs = load_pairs(ab.eval_hr, ab.eval_lr, ab.scale, ab.limit)
    if not pairs:
        raise UserError(f"{ab.path}: no validation images in {ab.eval_hr}")
    rt = make_runtime(device, "fp32", "false")
    methods: dict[str, Any] = {"bicubic": bicubic(ab.scale)}
    status: dict[str, str] = {}
    for name, cfg in ab.configs.items():
        model = final_model(cfg)
        if not _read_state(Path(cfg.run_dir)).get("finished") or model is None:
            status[name] = "not finished"
            continue
        module, out_range = load_generator(model)
        methods[name] = runner(module.to(rt.device), out_range, rt)
        status[name] = f"finished ({model.stem})"
    outputs: dict[str, list[torch.Tensor]] = {}
    results: dict[str, dict[str, Any]] = {}
    for name, method in methods.items():
        log(f"plfw ablate: scoring {name}")
        images: list[torch.Tensor] = []

        def keep(x: torch.Tensor, m: Any = method, store: list = images) -> torch.Tensor:
            sr = m(x)
            store.append(sr.float().cpu())
            return sr

        scores = evaluate(keep, pairs, ab.scale)
        outputs[name] = images
        results[name] = {"psnr_y": scores["psnr_y"], "ssim_y": scores["ssim_y"],
                         "per_image": scores["per_image"], "distance": {}}
    networks = [_spec_label(s) for s in ab.distance]
    trained_with = {name: training_networks(ab.configs[name]) for name in methods
                    if name in ab.configs}
    known = set(get_plugins().registry.components["feature_extractor"])
    for spec, label in zip(ab.distance, networks, strict=True):
        if spec["name"] not in known:
            raise UserError(f"{ab.path}: distance network '{spec['name']}' is not a registered "
                            "feature extractor (see plfw plugins)")
        eligible = [n for n in methods if spec["name"] not in trained_with.get(n, set())]
        if not eligible:
            continue
        log(f"plfw ablate: perceptual distance with {label}")
        net = plfw.build("feature_extractor", spec, "ablation distance").to(rt.device)
        for name in eligible:
            values = [perceptual_distance(net, sr, p.hr, ab.scale)
                      for sr, p in zip(outputs[name], pairs, strict=True)]
            results[name]["distance"][label] = sum(values) / len(values)
    return {"pairs": pairs, "outputs": outputs, "results": results, "status": status,
            "networks": networks, "trained_with": trained_with}


def _crop_grids(ab: Ablation, out_dir: Path, ev: dict[str, Any]) -> list[Path]:
    from plfw.visuals import grid, save_png

    paths = []
    names = list(ev["outputs"])
    for i, pair in enumerate(ev["pairs"]):
        top, left = _detail_crop(pair.hr, ab.crop)

        def cut(x: torch.Tensor, t: int = top, lf: int = left) -> torch.Tensor:
            return x[..., t: t + ab.crop, lf: lf + ab.crop]

        row = [cut(_rgb(ev["outputs"][n][i])) for n in names] + [cut(_rgb(pair.hr))]
        image = grid([row], [*names, "HR"], cell=ab.crop * ab.zoom)
        paths.append(save_png(image, out_dir / f"crops_{pair.name}.png"))
    return paths


def _read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
    return rows


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UserError("the ablation report draws its curves with matplotlib: "
                        "pip install 'plfw[report]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _loss_curves(ab: Ablation, out_dir: Path) -> Path | None:
    """One panel per run: every logged loss term against the global step, log scale."""
    runs = {n: _read_metrics(Path(c.run_dir)) for n, c in ab.configs.items()}
    runs = {n: rows for n, rows in runs.items() if any("loss" in r for r in rows)}
    if not runs:
        return None
    plt = _pyplot()
    cols = min(3, len(runs))
    rows_n = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.0 * rows_n), squeeze=False)
    for ax, (name, rows) in zip(axes.flat, runs.items(), strict=False):
        # A resumed run logs again from its checkpoint on: the later record of a step wins.
        by_step = {r["step"]: r for r in rows if any(k.startswith("loss") for k in r)}
        records = [by_step[s] for s in sorted(by_step)]
        keys = sorted({k for r in records for k in r if k.startswith("loss")})
        for key in keys:
            pts = [(r["step"], r[key]) for r in records if key in r and r[key] > 0]
            if pts:
                ax.plot(*zip(*pts, strict=True), label=key, linewidth=1)
        for prev, cur in zip(records, records[1:], strict=False):
            if prev.get("phase") != cur.get("phase"):
                ax.axvline(prev["step"], color="grey", linestyle=":", linewidth=1)
        ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(runs):]:
        ax.axis("off")
    fig.tight_layout()
    path = out_dir / "loss_curves.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _table(ab: Ablation, out_dir: Path, ev: dict[str, Any]) -> list[str]:
    networks = ev["networks"]
    head = ["run", "overrides", "PSNR-Y [dB]", "SSIM-Y", *[f"d {n} (lower is better)"
                                                           for n in networks], "train time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in ["bicubic", *ab.runs]:
        if name not in ev["results"]:
            cells = [name, "", *["-"] * (2 + len(networks)), ev["status"].get(name, "")]
            lines.append("| " + " | ".join(cells) + " |")
            continue
        r = ev["results"][name]
        dist = [f"{r['distance'][n]:.4f}" if n in r["distance"] else "(trained with it)"
                for n in networks]
        over = "<br>".join(f"`{o}`" for o in ab.runs.get(name, [])) or "-"
        seconds = _read_state(out_dir / name).get("train_seconds") if name in ab.runs else None
        time_cell = _duration(seconds)
        before = _starts_from(ab, name, out_dir) if name in ab.runs else []
        if before:
            time_cell += " (+ " + ", ".join(before) + ")"
        lines.append(f"| {name} | {over} | {r['psnr_y']:.2f} | {r['ssim_y']:.4f} | "
                     + " | ".join(dist) + f" | {time_cell} |")
    return lines


def write_report(ab: Ablation, out_dir: Path, device: str = "auto", log: Any = print) -> Path:
    """Score every finished run and write report.md, report.json, crops_*.png and curves."""
    started = time.perf_counter()
    _pyplot()  # fail before the slow part when matplotlib is missing
    out_dir.mkdir(parents=True, exist_ok=True)
    ev = _evaluate(ab, out_dir, device, log)
    crops = _crop_grids(ab, out_dir, ev)
    curves = _loss_curves(ab, out_dir)
    pairs = ev["pairs"]
    total = sum(_read_state(out_dir / n).get("train_seconds") or 0.0 for n in ab.runs)
    common = "<br>".join(f"`{o}`" for o in ab.overrides) or "none"
    lines = [
        f"# Ablation report: {ab.stem}", "",
        f"Base config `{ab.base.name}`; overrides shared by every run: {common}. "
        f"Scored on {len(pairs)} image(s) from `{ab.eval_hr}` at x{ab.scale} "
        f"(LR: {'`' + str(ab.eval_lr) + '`' if ab.eval_lr else 'MATLAB-style bicubic of HR'}).",
        "", *_table(ab, out_dir, ev), "",
        "PSNR-Y / SSIM-Y: BT.601 luma, border = scale, mean over images. *d*: perceptual "
        "distance, LPIPS-shaped without learned weights: per tap, features are divided by "
        "their L2 norm over channels at each position, d = mean squared difference per "
        "position, averaged over taps and images (0 = identical, at most 4). A run is not "
        "measured with a network its own losses used. Train time: wall time of `plfw train` "
        "for the run (build, training, its own validation), summed over resumptions; '(+ x)' "
        "means the run starts from run x's model, whose time is not included.", "",
        f"All training together: {_duration(total)}; scoring the runs and drawing this report: "
        f"{_duration(time.perf_counter() - started)}.", "",
    ]
    if ab.notes:
        lines += ["## What this comparison can and cannot show", "", ab.notes.strip(), ""]
    lines += ["## Crops", "", "Bicubic, each run and HR on the most detailed "
              f"{ab.crop}x{ab.crop} HR window of each image, enlarged {ab.zoom}x "
              "(nearest neighbour).", ""]
    lines += [f"![{p.stem}]({p.name})" for p in crops]
    if curves is not None:
        lines += ["", "## Loss curves", "", "Logged loss terms per run (unweighted; `loss` is "
                  "the weighted total); dotted lines separate phases.", "",
                  f"![loss curves]({curves.name})"]
    report = out_dir / "report.md"
    atomic_write_bytes(report, ("\n".join(lines) + "\n").encode())
    data = {name: dict(r) for name, r in ev["results"].items()}
    for name in data:
        if name in ab.runs:
            data[name]["train_seconds"] = _read_state(out_dir / name).get("train_seconds")
            data[name]["trained_with"] = sorted(ev["trained_with"].get(name, ()))
    atomic_write_bytes(out_dir / "report.json", json.dumps(
        {"status": ev["status"], "networks": ab.distance, "runs": data}, indent=2).encode())
    return report


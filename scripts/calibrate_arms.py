"""One content weight per study arm, shared by all its seeds: gradient matching to VGG54 on one
fixed batch, computed by the trainer's own calibration.

For every run of an ablation file whose content loss says ``match_gradient``, this trains one
update of its first job in a temporary folder with ``calibration_seed`` and ``calibration_sr``
set, and reads the factor the trainer logged. Write the factors into the study file as fixed
weights (and drop ``match_gradient`` there), so the arms differ in features, not in a
calibration batch that changes with every seed.

    python scripts/calibrate_arms.py configs/study/loss_networks_v2_calibration.yaml \
        --seed 2026 --sr generator --json docs/study/v2/calibration.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from plfw.core.config import load_config, to_yaml
from plfw.core.plugins import load_plugins
from plfw.studies.ablation import load_ablation
from plfw.trainer import Trainer


def calibrate(path: str, seed: int, sr: str, phase: str,
              run_seeds: tuple[int, ...] = (0,)) -> dict[str, dict]:
    ab = load_ablation(path)
    out: dict[str, dict] = {}
    for run in ab.runs:
        for run_seed in run_seeds:
            label = run if len(run_seeds) == 1 else f"{run}/seed{run_seed}"
            out[label] = _factor(next(j for j in ab.jobs if j.run == run), seed, sr, phase,
                                 run_seed)
            factors = ", ".join(f"{k} {v['factor']:.6g}" for k, v in out[label].items())
            print(f"{label}: {factors or 'no match_gradient loss'}", flush=True)
    return out


def _factor(job: Any, seed: int, sr: str, phase: str, run_seed: int) -> dict[str, dict]:
    """The factors the trainer logs for ``job`` run with seed ``run_seed`` (which changes the
    run's random parts, e.g. a random-weight loss network, not the calibration batch)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg_file = Path(tmp) / "job.yaml"
        cfg_file.write_text(to_yaml(job.config))
        cfg = load_config(cfg_file, [f"run_dir={tmp}/run", f"phases.{phase}.steps=1",
                                     f"seed={run_seed}", f"phases.{phase}.calibration_seed={seed}",
                                     f"phases.{phase}.calibration_sr={sr}", "curve.at=[]"])
        Trainer(cfg, load_plugins().registry, progress=False).fit()
        rows = [json.loads(line) for line in
                (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    calib = next((r["calibration"] for r in rows if "calibration" in r), {})
    return {label: v for label, v in calib.items() if "factor" in v}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ablation")
    p.add_argument("--seed", type=int, default=2026, help="calibration batch seed")
    p.add_argument("--sr", default="generator", choices=["generator", "bicubic"])
    p.add_argument("--phase", default="srgan")
    p.add_argument("--run-seeds", type=int, nargs="+", default=[0],
                   help="run seeds (a random-weight network differs per seed)")
    p.add_argument("--json", help="write the factors here")
    args = p.parse_args()
    result = calibrate(args.ablation, args.seed, args.sr, args.phase, tuple(args.run_seeds))
    if args.json:
        Path(args.json).write_text(json.dumps({"ablation": args.ablation, "seed": args.seed,
                                               "sr": args.sr, "factors": result}, indent=1))


if __name__ == "__main__":
    main()

"""`plfw mos create --from-ablation DIR`: a MOS study of an ablation's runs.

The ablation's ``report.json`` names its evaluation sets and each finished job's generator.
Each run contributes one method (its first finished seed; with a sweep, at the primary
endpoint's point) plus bicubic; every method
super-resolves the same LR images the report scored, each evaluation set becomes a data set of
the study, and the HR images are the reference. The images are made in a temporary folder next
to the study and handed to :func:`plfw.mos.create.create_study`, which checks them as usual.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

from plfw.core.errors import UserError
from plfw.core.registry import Registry
from plfw.evaluation.evaluate import bicubic, load_pairs
from plfw.imaging.images import save_image
from plfw.mos.study import Study

REPORT = "report.json"


def _first_seed_models(report: dict, folder: Path) -> dict[str, Path]:
    """Run name -> generator of its lowest finished seed, in the report's run order (paths in
    the report are relative to its folder). With a sweep, only the models at the report's main
    point (the primary endpoint's, else the middle sweep value) are rated."""
    jobs = report.get("jobs", {})
    main = report.get("main_point", "")
    chosen: dict[str, tuple[str, Path]] = {}
    order = []
    for label, path in report.get("models", {}).items():
        info = jobs.get(label, {})
        if info.get("point", "") != main:
            continue
        run = info.get("run", label.split("/")[0])
        order.append(run)
        if run not in chosen or label < chosen[run][0]:
            chosen[run] = (label, folder / path)
    return {run: chosen[run][1] for run in dict.fromkeys(order)}


def create_from_ablation(study_dir: str | Path, ablation_dir: str | Path, registry: Registry, *,
                         calibration: int = 3, seed: int | None = None,
                         runs: list[str] | None = None, device: str = "auto") -> Study:
    """Write a MOS study comparing bicubic and each finished run of an ablation."""
    from plfw.inference.model import open_model
    from plfw.mos.create import create_study

    source = Path(ablation_dir) / REPORT
    if not source.is_file():
        raise UserError(f"{ablation_dir}: no {REPORT}; run plfw ablate (or plfw ablate FILE "
                        "--report-only) there first")
    report = json.loads(source.read_text(encoding="utf-8"))
    models = _first_seed_models(report, source.parent)
    if runs:
        unknown = [r for r in runs if r not in models]
        if unknown:
            raise UserError(f"--run {unknown[0]}: no finished run of that name in {source} "
                            f"(finished: {', '.join(models) or 'none'})")
        models = {r: models[r] for r in runs}
    if not models:
        raise UserError(f"{source}: no finished run to rate yet")
    scale = int(report["scale"])
    study_dir = Path(study_dir)
    study_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{study_dir.name}.inputs.", dir=study_dir.parent))
    try:
        methods = {"bicubic": bicubic(scale)}
        for run, path in models.items():
            methods[run] = open_model(path, registry, device).image
        for set_name, folders in report["set_folders"].items():
            pairs = load_pairs(folders["hr"], folders["lr"], scale, folders.get("limit", 0))
            for pair in pairs:
                save_image(pair.hr, work / "HR" / set_name / f"{pair.name}.png")
                save_image(pair.lr, work / "LR" / set_name / f"{pair.name}.png")
                lr = pair.lr if pair.lr.shape[0] == 3 else pair.lr.expand(3, -1, -1)
                for name, method in methods.items():
                    with torch.inference_mode():
                        sr = method(lr).float().cpu()
                    if pair.hr.shape[0] == 1:
                        sr = sr.mean(0, keepdim=True)
                    save_image(sr, work / "methods" / name / set_name / f"{pair.name}.png")
        return create_study(study_dir, {n: work / "methods" / n for n in methods}, work / "HR",
                            scale=scale, lr=work / "LR", calibration=calibration, seed=seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)

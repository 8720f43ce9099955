"""Learning curves (curve.jsonl), per-term gradient norms, and a calibration batch shared by
seeds: what a study needs to see how long and how hard each loss term trained."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import REGISTRY, make_images, tiny_config

from plfw.core.config import load_config
from plfw.core.errors import UserError
from plfw.device.runtime import make_runtime
from plfw.evaluation.evaluate import evaluate, load_pairs
from plfw.inference.generators import load_generator, runner
from plfw.trainer import Trainer


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _curve_overrides(tmp: Path) -> list[str]:
    sets = make_images(tmp / "curve", 2, (32, 32), seed=5)
    return ["curve.at=[2,4,6]", "curve.metrics=[psnr_y,ssim_y]",
            f"curve.sets={{small: {{hr: {sets}}}}}"]


def test_curve_scores_every_image_at_the_chosen_steps(tmp_path: Path) -> None:
    cfg = load_config(tiny_config(tmp_path), _curve_overrides(tmp_path))
    Trainer(cfg, REGISTRY, progress=False).fit()
    rows = _rows(Path(cfg.run_dir) / "curve.jsonl")
    assert [(r["step"], r["phase"], r["set"]) for r in rows] == [
        (2, "srresnet", "small"), (4, "srgan", "small"), (6, "srgan", "small")]
    assert set(rows[-1]["scores"]) == {"psnr_y", "ssim_y"}
    assert set(rows[-1]["scores"]["psnr_y"]) == {"img00", "img01"}
    # the last point is the final generator's own score
    module, out_range = load_generator(Path(cfg.run_dir) / "models" / "srgan.pt", REGISTRY)
    pairs = load_pairs(tmp_path / "curve", None, 4)
    final = evaluate(runner(module, out_range, make_runtime("cpu", "fp32")), pairs, 4)
    got = rows[-1]["scores"]["psnr_y"]
    assert got["img00"] == pytest.approx(final["per_image"][0]["psnr_y"], abs=1e-9)


def test_resume_drops_curve_points_the_checkpoint_does_not_hold(tmp_path: Path) -> None:
    path = tiny_config(tmp_path)
    first = load_config(path, [*_curve_overrides(tmp_path), "phases.srgan.steps=2",
                                "train.keep_last=5"])
    Trainer(first, REGISTRY, progress=False).fit()  # steps 1-5: curve points 2 and 4
    run = Path(first.run_dir)
    # a crash after the curve point at 4 but before checkpoint 5 is written: that checkpoint
    # never existed, so resuming from 3 must redo (not duplicate) the point at 4
    (run / "checkpoints" / "step_00000005.pt").unlink()
    (run / "checkpoints" / "step_00000004.pt").unlink(missing_ok=True)
    more = load_config(path, _curve_overrides(tmp_path))
    Trainer(more, REGISTRY, resume=True, progress=False).fit()
    steps = [r["step"] for r in _rows(run / "curve.jsonl")]
    assert steps == [2, 4, 6]


def test_curve_settings_are_checked(tmp_path: Path) -> None:
    path = tiny_config(tmp_path)
    with pytest.raises(UserError, match="curve.sets is empty"):
        load_config(path, ["curve.at=[2]"])
    with pytest.raises(UserError, match="distinct steps"):
        load_config(path, ["curve.at=[0]", "curve.sets={a: {hr: x}}"])
    cfg = load_config(path, ["curve.at=[2]", f"curve.sets={{a: {{hr: {tmp_path / 'nope'}}}}}"])
    with pytest.raises(UserError, match="folder not found"):
        Trainer(cfg, REGISTRY, progress=False)


def test_gradient_norm_of_each_term_is_logged_at_log_steps(tmp_path: Path) -> None:
    cfg = load_config(tiny_config(tmp_path), ["train.log_every=2", "phases.srgan.steps=4"])
    Trainer(cfg, REGISTRY, progress=False).fit()
    rows = [r for r in _rows(Path(cfg.run_dir) / "metrics.jsonl") if r.get("phase") == "srgan"
            and "loss" in r]
    assert rows, "no GAN log rows"
    for r in rows:
        assert r["grad_sr_content"] > 0 and r["grad_sr_adversarial"] > 0
        assert math.isfinite(r["grad_sr_content"])
    mse = [r for r in _rows(Path(cfg.run_dir) / "metrics.jsonl") if r.get("phase") == "srresnet"
           and "loss" in r and "grad_sr_pixel" in r]
    assert mse  # the pixel term of the MSE phase too


def test_measuring_does_not_change_the_update(tmp_path: Path) -> None:
    a = load_config(tiny_config(tmp_path / "a"), ["train.log_every=1"])
    b = load_config(tiny_config(tmp_path / "b"), ["train.log_every=1000"])
    Trainer(a, REGISTRY, progress=False).fit()
    Trainer(b, REGISTRY, progress=False).fit()
    for phase in ("srresnet", "srgan"):
        wa = torch.load(Path(a.run_dir) / "models" / f"{phase}.pt", weights_only=True)
        wb = torch.load(Path(b.run_dir) / "models" / f"{phase}.pt", weights_only=True)
        for k, v in wa["state_dict"].items():
            assert torch.equal(v, wb["state_dict"][k]), (phase, k)


def _factor(tmp: Path, seed: int, extra: list[str]) -> float:
    cfg = load_config(tiny_config(tmp / f"s{seed}"), [
        f"seed={seed}", "phases.srresnet.steps=0", "phases.srgan.steps=1",
        "phases.srgan.losses.content={name: mse, match_gradient: vgg54}", *extra])
    Trainer(cfg, REGISTRY, progress=False).fit()
    calib = [r["calibration"] for r in _rows(Path(cfg.run_dir) / "metrics.jsonl")
             if "calibration" in r]
    return calib[0]["content"]["factor"]


def test_a_fixed_calibration_batch_gives_every_seed_the_same_factor(tmp_path: Path) -> None:
    own = [_factor(tmp_path / "own", s, []) for s in (1, 2)]
    assert own[0] != own[1]  # each seed's first batch: factors differ
    fixed = ["phases.srgan.calibration_seed=7"]
    shared = [_factor(tmp_path / "fixed", s, fixed) for s in (1, 2)]
    assert shared[0] == shared[1]
    start = load_config(tiny_config(tmp_path / "start"), ["phases.srgan=null"])
    Trainer(start, REGISTRY, progress=False).fit()
    init = Path(start.run_dir) / "models" / "srresnet.pt"
    gen = [_factor(tmp_path / "gen", s, [*fixed, "phases.srgan.calibration_sr=generator",
                                         f"phases.srgan.init={init}"]) for s in (1, 2)]
    assert gen[0] == gen[1] and gen[0] != shared[0]  # another stand-in SR, another factor
    with pytest.raises(UserError, match="calibration_sr"):
        load_config(tiny_config(tmp_path / "bad"), ["phases.srgan.calibration_sr=x"])

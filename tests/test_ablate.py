"""plfw ablate: a seeded grid end to end, resumption, the report, re-scoring and file checks."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch
import yaml
from helpers import REGISTRY, make_images, tiny_config

import plfw
from plfw.cli import main
from plfw.core.errors import UserError
from plfw.device.probe import machine
from plfw.studies.ablate import read_state, run_ablation, train_job
from plfw.studies.ablation import load_ablation
from plfw.studies.report import answer
from plfw.studies.trained_with import training_networks

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _keep_threads() -> object:
    """The runs use one torch thread (quicker on a busy machine); restore it afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _ablation(tmp: Path, **changes: object) -> Path:
    tiny_config(tmp)
    data: dict = {
        "base": "tiny.yaml",
        "overrides": ["phases.srresnet.steps=2", "phases.srgan.steps=2", "train.threads=1"],
        "seeds": [0, 1],
        "baseline": "mse",
        "runs": {
            "mse": ["phases.srgan=null"],
            "gan": ["phases.srresnet=null",
                    "phases.srgan.init={out}/mse/seed{seed}/models/srresnet.pt",
                    "phases.srgan.losses.content.network={name: st_lpips_alex, weights: none}",
                    "phases.srgan.losses.content.layers={relu2: 1.0}"],
        },
        "metrics": ["psnr_y", "ssim_y", "st_lpips_alex"],
        "eval": {"sets": {"a": {"hr": str(make_images(tmp / "val1", 2, (48, 48), seed=4))},
                          "b": {"hr": str(make_images(tmp / "val2", 2, (48, 40), seed=5))}}},
        "report": {"crop": 16, "zoom": 2, "crop_images": 3, "bootstrap": 500},
        "notes": "Two steps per run: this shows the plumbing, nothing about the networks.",
    }
    if "runs" in changes:
        data.pop("baseline")
    data.update(changes)
    path = tmp / "grid.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _rows(text: str) -> dict[str, str]:
    """The first table row of each run: the results table, pooled over all sets."""
    rows: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("| "):
            rows.setdefault(line.split("|")[1].strip().strip("*"), line)
    return rows


def test_seeded_ablation_end_to_end_report_and_resume(tmp_path: Path) -> None:
    path = _ablation(tmp_path)
    out = tmp_path / "out"
    lines: list[str] = []
    report = run_ablation(path, REGISTRY, out, device="cpu", log=lines.append)
    for run in ("mse", "gan"):
        for seed in (0, 1):
            state = read_state(out / run / f"seed{seed}")
            assert state["finished"] and state["train_seconds"] > 0 and state["seed"] == seed
            assert state["code"][0].startswith("plfw ")  # which code trained it
            # where and how long: each session's machine, and scoring as it finished
            [session] = state["sessions"]
            assert session["machine"] == machine()  # CPU model and flags, torch, threads
            assert 0 < session["train_seconds"] == state["train_seconds"]
            assert state["score_seconds"] > 0
    cfg = yaml.safe_load((out / "gan" / "seed1" / "config.yaml").read_text())
    assert cfg["seed"] == 1 and cfg["phases"]["srgan"]["init"].endswith("mse/seed1/models/"
                                                                        "srresnet.pt")
    # seed-major order: both runs at seed 0 before either at seed 1
    order = [line.split(":")[1].strip() for line in lines if "training in" in line]
    assert order == ["mse/seed0", "gan/seed0", "mse/seed1", "gan/seed1"]
    # scoring shows each set as it is done, with the metrics it scored there
    assert any(line.startswith("plfw ablate: gan/seed0: b scored (2 images, psnr_y")
               for line in lines)

    text = report.read_text()
    assert "## Answer" in text
    assert "Compared with the baseline `mse` (2 seed(s)) on 4 images" in text
    assert "nothing about the networks" in text
    rows = _rows(text)
    assert "(trained with it)" in rows["gan"]  # gan trains with st_lpips_alex's trunk
    assert "2/2" in rows["mse"] and "2/2" in rows["gan"]
    for png in ("forest.png", "crops.png", "loss_curves.png"):
        assert (out / png).stat().st_size > 0 and f"({png})" in text
    assert "### a (2 images)" in text and "### b (2 images)" in text
    # compute per machine: every job here trained on this one
    assert f"on {session['machine']})" in text and "(recorded for 4 of 4 finished jobs)" in text

    data = json.loads((out / "report.json").read_text())
    assert data["training"]["gan/seed0"]["trained_with"] == ["st_lpips_alex"]
    assert data["training"]["gan/seed0"]["sessions"] == read_state(out / "gan" / "seed0")[
        "sessions"]
    assert "st_lpips_alex" not in data["jobs"]["gan/seed0"]["scores"]["a"]
    assert data["metrics"]["st_lpips_alex"]["higher_is_better"] is False
    # the reported means are the plain means of the per-image scores in the same file
    for metric in ("psnr_y", "ssim_y"):
        for run in ("mse", "gan"):
            values = [v for seed in (0, 1) for s in ("a", "b")
                      for v in data["jobs"][f"{run}/seed{seed}"]["scores"][s][metric]]
            mean = data["statistics"][metric]["mean"][run]
            assert mean["value"] == pytest.approx(statistics.fmean(values))
            assert mean["low"] <= mean["value"] <= mean["high"]
        diff = data["statistics"][metric]["difference"]["gan"]
        assert diff["value"] == pytest.approx(data["statistics"][metric]["mean"]["gan"]["value"]
                                              - data["statistics"][metric]["mean"]["mse"]["value"])

    # Second report: the finished jobs' scores come from their cache, nothing retrains.
    mtime = (out / "mse" / "seed0" / "models" / "srresnet.pt").stat().st_mtime_ns
    lines.clear()
    run_ablation(path, REGISTRY, out, device="cpu", log=lines.append)
    assert sum("finished earlier, skipped" in line for line in lines) == 4
    assert not any("scoring mse" in line or "scoring gan" in line for line in lines)
    assert (out / "mse" / "seed0" / "models" / "srresnet.pt").stat().st_mtime_ns == mtime

    # A job cut short (checkpoints, no finished mark) resumes and its time adds up.
    ab = load_ablation(path, out)
    job = next(j for j in ab.jobs if j.label == "gan/seed0")
    state_file = out / "gan" / "seed0" / "ablate.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "finished": False}))
    assert train_job(ab, job, REGISTRY, log=lines.append) == "resumed"
    after = json.loads(state_file.read_text())
    assert after["finished"] and after["train_seconds"] > state["train_seconds"]
    assert len(after["sessions"]) == 2 and after["train_seconds"] == pytest.approx(
        sum(s["train_seconds"] for s in after["sessions"]))

    # The crop grid's rows line up: each bicubic crop is nearest to the HR crop of its image.
    from plfw.studies.scores import score

    _, _, scores, _ = score(load_ablation(path, out), REGISTRY, "cpu", log=lambda _: None)
    hr = scores.crops["HR"]
    assert len(hr) == 3 and set(scores.crops["bicubic"]) == set(hr) == set(scores.crops["gan"])
    for key, crop in scores.crops["bicubic"].items():
        nearest = min(hr, key=lambda k: float((hr[k] - crop).abs().mean())
                      if hr[k].shape == crop.shape else float("inf"))
        assert nearest == key

    # Re-scoring on another folder writes a report of its own and keeps the main one.
    other = make_images(tmp_path / "other", 3, (48, 44), seed=9)
    assert main(["ablate", str(path), "--out", str(out), "--report-only", "--hr", str(other),
                 "--device", "cpu", "--quiet"]) == 0
    again = json.loads((out / "report_other" / "report.json").read_text())
    assert again["sets"] == {"other": ["img00", "img01", "img02"]}
    assert json.loads((out / "report.json").read_text())["sets"] == data["sets"]

    # The same runs, rated by people: a MOS study with one method per run.
    study = tmp_path / "mos"
    assert main(["mos", "create", str(study), "--from-ablation", str(out), "--seed", "1",
                 "--calibration", "1"]) == 0
    manifest = json.loads((study / "study.json").read_text())
    assert {"bicubic", "mse", "gan"} <= set(manifest["methods"])
    assert manifest["datasets"] == ["a", "b"] and len(manifest["images"]) == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mos.inputs")]


def test_changed_config_is_refused(tmp_path: Path) -> None:
    from plfw.core.config import to_dict

    ab = load_ablation(_ablation(tmp_path), tmp_path / "out")
    job = ab.jobs[0]
    job.run_dir.mkdir(parents=True)
    config = json.loads(json.dumps(to_dict(job.config)))
    config["train"]["threads"] = 7  # how a run executes may change between invocations
    config["run_dir"] = "/moved/elsewhere"  # and where it lives
    state = {"config": config, "finished": True, "train_seconds": 1.0}
    (job.run_dir / "ablate.json").write_text(json.dumps(state))
    assert train_job(ab, job, REGISTRY, log=lambda _: None) == "skipped"
    phase = next(iter(config["phases"].values()))
    del phase["optimizer"], phase["warmup"]  # written by a plfw before these settings existed
    (job.run_dir / "ablate.json").write_text(json.dumps({**state, "config": config}))
    assert train_job(ab, job, REGISTRY, log=lambda _: None) == "skipped"
    phase["warmup"] = 5  # a setting that exists now and differs from its default does count
    (job.run_dir / "ablate.json").write_text(json.dumps({**state, "config": config}))
    with pytest.raises(UserError, match="changed since it was trained"):
        train_job(ab, job, REGISTRY, log=lambda _: None)
    phase["warmup"] = 0
    config["seed"] += 1  # what it learns may not
    (job.run_dir / "ablate.json").write_text(json.dumps({**state, "config": config}))
    with pytest.raises(UserError, match="changed since it was trained"):
        train_job(ab, job, REGISTRY, log=lambda _: None)


@pytest.mark.parametrize(("changes", "message"), [
    ({"runs": {"a": ["phases.srresnet.stepz=3"]}}, r"run 'a': unknown config key "
                                                    r"'phases.srresnet.stepz'"),
    ({"base": "missing.yaml"}, "base config not found"),
    ({"runz": {}}, "unknown config key 'runz'"),
    ({"runs": {"a": "phases.srgan=null"}}, "runs.a: expected a list"),
    ({"runs": {"a b": []}}, "run name"),
    ({"runs": {"bicubic": []}}, "run name 'bicubic' is taken"),
    ({"runs": {"a": ["oops"]}}, "'oops' is not of the form key=value"),
    ({"eval": {"hr": "x", "scal": 4}}, "unknown config key 'eval.scal'"),
    ({"eval": {"hr": "x", "scale": "four"}}, "eval.scale"),
    ({"seeds": [1, 1]}, "seeds must be a non-empty list of distinct"),
    ({"baseline": "msee"}, "baseline 'msee' is not one of the runs.*mse"),
    ({"report": {"bootstrap": 10}}, "bootstrap >= 100"),
    ({"metrics": []}, "give at least one metric"),
])
def test_bad_ablation_files(tmp_path: Path, changes: dict, message: str) -> None:
    path = _ablation(tmp_path, **changes)
    with pytest.raises(UserError, match=message):
        load_ablation(path)


def test_cli_prints_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _ablation(tmp_path, base="nope.yaml")
    assert main(["ablate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("plfw: error:") and "\n" not in err


def test_unknown_metric_fails_before_scoring(tmp_path: Path) -> None:
    path = _ablation(tmp_path, metrics=["psnr_y", "st_lpips_alx"], seeds=None)
    with pytest.raises(UserError, match="st_lpips_alex"):
        run_ablation(path, REGISTRY, tmp_path / "out", report_only=True, device="cpu",
                     log=lambda _: None)


def test_training_networks(tmp_path: Path) -> None:
    ab = load_ablation(_ablation(tmp_path))
    by_run = {j.run: training_networks(j.config, REGISTRY) for j in ab.jobs}
    assert by_run == {"mse": set(), "gan": {"st_lpips_alex"}}
    # a perceptual loss that names no network trains with the loss's default one (vgg19)
    cfg = ab.jobs[1].config
    cfg.phases["srgan"].losses["content"].pop("network")
    assert training_networks(cfg, REGISTRY) == {"vgg19"}


@pytest.mark.parametrize("path", ["ablation/paper_table1.yaml", "ablation/beyond_vgg.yaml",
                                  "ablation/cpu_quick.yaml", "study/loss_networks.yaml",
                                  "study/loss_networks_gpu.yaml",
                                  "study/loss_networks_online.yaml",
                                  "study/loss_networks_v2.yaml", "study/loss_networks_v2_gpu.yaml",
                                  "study/loss_networks_v2_online.yaml", "study/pilot_v2.yaml",
                                  "study/loss_networks_v2_calibration.yaml",
                                  "ablation/smoke_sweep.yaml"])
def test_shipped_ablations_load(path: str) -> None:
    ab = load_ablation(REPO / "configs" / path)
    assert ab.out == Path("runs") / Path(path).stem
    for job in ab.jobs:
        init = job.config.phases[list(job.config.phases)[-1]].init
        assert init is None or init.startswith(str(ab.out)) or Path(init).is_file(), job.label
    if ab.spec.baseline:
        assert ab.spec.baseline in ab.runs
    if path.startswith("study/"):  # reports that get committed show crops of shipped images only
        crop_sets = ab.spec.report.crop_sets
        for name in ab.sets if crop_sets is None else crop_sets:
            assert ab.sets[name].hr.startswith("assets/"), (path, name)


def test_the_v2_study_is_what_the_issue_asks_for() -> None:
    """The design the study issue asks for, checked on the file itself."""
    ab = load_ablation(REPO / "configs" / "study" / "loss_networks_v2.yaml")
    assert {"vgg54", "vgg22", "vgg54_conv", "vgg54_random", "lite2", "mse"} <= set(ab.runs)
    (key, values), = ab.spec.sweep.items()
    assert key == "phases.srgan.losses.adversarial.weight"
    assert len(values) >= 3 and max(values) / min(values) >= 10 and 1e-3 in values
    seeds: dict[tuple, set] = {}
    for job in ab.jobs:
        seeds.setdefault((job.run, job.point), set()).add(job.seed)
        cfg = job.config
        assert cfg.train.precision == "fp32"
        srgan = cfg.phases["srgan"]
        assert (REPO / srgan.init).is_file()
        content = srgan.losses["content"]
        assert "match_gradient" not in content and content["weight"] > 0  # fixed per arm
        roots = [cfg.data.train["root"], *cfg.data.train["more_roots"]]
        assert not any("General100" in r for r in roots)  # held out of training
    for (run, point), got in seeds.items():
        assert len(got) >= (3 if dict(point)[key] == 1e-3 else 2), (run, point)
    assert "General100" in ab.sets and ab.spec.eval.curve.at
    paper = {"vgg54": 1.0, "vgg22": 1.0, "mse": 1.0}
    for job in ab.jobs:
        if job.run in paper:
            assert job.config.phases["srgan"].losses["content"]["weight"] == paper[job.run]
    # the primary endpoint is declared: one perceptual metric at matched PSNR-Y on General100
    prim = ab.spec.primary
    assert (prim.metric, prim.set, prim.at_baseline_psnr) == ("st_lpips_alex", "General100", True)
    assert prim.point == {key: 1e-3}
    # the paper's halfway lr decay, curves that end at the last update, baseline and MSE first
    gpu = load_ablation(REPO / "configs" / "study" / "loss_networks_v2_gpu.yaml")
    for study in (ab, gpu):
        srgan = study.jobs[0].config.phases["srgan"]
        assert srgan.milestones == [srgan.steps // 2] and srgan.gamma == 0.1
        assert study.spec.eval.curve.at[-1] == srgan.steps
        assert [j.run for j in study.jobs[:2]] == ["vgg54", "mse"]
        assert all(dict(j.point)[key] == 1e-3 for j in study.jobs[:2])
    assert gpu.runs == ab.runs and set(gpu.spec.sweep) == set(ab.spec.sweep)
    first = gpu.jobs[0].config
    assert first.data.batch_size == 16 and first.data.train["crop"] == 96


def test_the_study_is_what_the_issue_asks_for() -> None:
    ab = load_ablation(REPO / "configs" / "study" / "loss_networks.yaml")
    assert ab.spec.seeds == [0, 1, 2] and len(ab.jobs) == 3 * len(ab.runs) >= 24
    nets = {j.run: training_networks(j.config, REGISTRY) for j in ab.jobs}
    assert nets["mse"] == set() and nets["vgg54"] == {"vgg19"}
    inits = {j.config.phases["srgan"].init for j in ab.jobs}
    assert len(inits) == 1 and (REPO / inits.pop()).is_file()  # one shared SRResNet
    for job in ab.jobs:
        content = job.config.phases["srgan"].losses["content"]
        assert content["match_gradient"] == "vgg54"
        assert job.config.phases["srgan"].losses["adversarial"]["weight"] == 1e-3
    assert set(ab.sets) == {"Set5", "Set14", "photos"}


def test_answer_is_written_from_the_numbers() -> None:
    class Spec:  # the two fields answer() reads from an ablation file
        baseline = "base"

        class report:
            confidence = 0.95

    class Ab:
        spec = Spec
        references: dict = {}

    def diff(value: float, low: float, high: float) -> dict:
        return {"value": value, "low": low, "high": high}

    stats = {"lpips": {
        "higher_is_better": False, "seeds": {"base": 3, "good": 3, "noise": 3, "bad": 3},
        "mean": {"base": {}, "good": {}, "noise": {}, "bad": {}},
        "difference": {"good": diff(-0.05, -0.07, -0.03), "noise": diff(0.01, -0.01, 0.03),
                       "bad": diff(0.002, 0.001, 0.003)},
        "seed_means": {"base": [0.30, 0.31, 0.32], "good": [0.25, 0.26, 0.25],
                       "noise": [0.3, 0.33, 0.31], "bad": [0.312, 0.309, 0.315]}}}
    text = "\n".join(answer(Ab, stats, 19))
    assert "Better than the baseline: `good` (lpips)" in text
    assert "Worse than the baseline: `bad` (lpips)" in text
    assert "Not distinguishable from the baseline: `noise` (lpips)" in text
    # bad's difference (0.002) is smaller than base's seed range (0.02): said so
    assert "not larger than the spread between one run's seeds" in text and "bad on lpips" in text
    # one seed each but an interval given: the interval decides, no seed-range check is made
    one = {"lpips": {**stats["lpips"], "seeds": {"base": 1, "good": 1},
                     "difference": {"good": diff(-0.05, -0.07, -0.03)},
                     "seed_means": {"base": [0.30], "good": [0.25]}}}
    text = "\n".join(answer(Ab, one, 19))
    assert "Better than the baseline: `good` (lpips)" in text
    assert "Every difference" not in text and "no interval" not in text
    text = "\n".join(answer(Ab, {"lpips": {**stats["lpips"], "difference": {
        "noise": diff(0.01, -0.01, 0.03)}}}, 19))
    assert "No run is shown better than `base` on any metric at 95%" in text
    # no interval at all (the baseline or the run has one seed): untested, not "not
    # distinguishable", also for a deterministic reference compared with a one-seed baseline
    class WithStart(Ab):
        references = {"start": "start.pt"}

    none = {"value": 0.01, "low": None, "high": None, "p": None, "p_holm": None}
    text = "\n".join(answer(WithStart, {"lpips": {**one["lpips"], "difference": {
        "start": none, "good": none}}}, 19))
    assert "Not distinguishable" not in text and "No run is" not in text
    assert "no interval" in text and "`good`, `start`" in text


@pytest.mark.slow
def test_study_variants_build_here() -> None:
    """The GPU variant extends the CPU study; the online one builds offline with weights: none."""

    gpu = load_ablation(REPO / "configs" / "study" / "loss_networks_gpu.yaml")
    cpu = load_ablation(REPO / "configs" / "study" / "loss_networks.yaml")
    assert gpu.runs == cpu.runs and gpu.spec.seeds == cpu.spec.seeds
    first = gpu.jobs[0].config
    assert first.data.batch_size == 16 and first.data.train["crop"] == 96
    assert first.phases["srgan"].steps > cpu.jobs[0].config.phases["srgan"].steps

    online = load_ablation(REPO / "configs" / "study" / "loss_networks_online.yaml",
                           extra=["phases.srgan.losses.content.network.weights=none"])
    online_v2 = load_ablation(REPO / "configs" / "study" / "loss_networks_v2_online.yaml",
                              extra=["phases.srgan.losses.content.network.weights=none"])
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    for job in [*online.jobs[: len(online.runs)], *online_v2.jobs[: len(online_v2.runs)]]:
        spec = dict(job.config.phases["srgan"].losses["content"])
        spec.pop("weight"), spec.pop("match_gradient", None)
        if spec.get("name") != "perceptual":
            continue
        loss = plfw.build("loss", spec)
        loss.set_image_range(-1.0, 1.0)
        loss.calibrate(x)
        value = loss(x.flip(-1), x)
        assert torch.isfinite(value) and value > 0, job.label


def test_seed_filter(tmp_path: Path) -> None:
    path = _ablation(tmp_path, runs={"mse": ["phases.srgan=null"]})
    lines: list[str] = []
    run_ablation(path, REGISTRY, tmp_path / "out", seeds=[1], report=False, log=lines.append)
    assert (tmp_path / "out" / "mse" / "seed1" / "ablate.json").is_file()
    assert not (tmp_path / "out" / "mse" / "seed0").exists()
    with pytest.raises(UserError, match="--seed 5: .* has seeds \\[0, 1\\]"):
        run_ablation(path, REGISTRY, tmp_path / "out", seeds=[5], report=False, log=lines.append)

"""plfw ablate for studies: sweeps, extra seeds, the primary endpoint, learning curves,
matched distortion, duplicates counted once, reference models and fp16 generators."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from helpers import REGISTRY, make_images

from plfw.core.errors import UserError
from plfw.device.runtime import make_runtime
from plfw.evaluation.evaluate import evaluate, load_pairs
from plfw.inference.generators import load_generator, runner
from plfw.studies.ablate import pack_job, run_ablation
from plfw.studies.ablation import load_ablation

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "ablation" / "smoke_sweep.yaml"
TINY = ["generator.blocks=1", "generator.channels=8", "phases.srgan.init=null",
        "phases.srgan.lr=1e-3"]


@pytest.fixture(autouse=True)
def _keep_threads() -> object:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_the_smoke_sweep_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The docs' worked example, with a tiny generator: 2 runs x 3 weights x 2 seeds (+1 seed
    at the primary weight) = 14 jobs, then the report with every new section."""
    monkeypatch.chdir(REPO)  # the file's paths are relative to the repository root
    out = tmp_path / "out"
    lines: list[str] = []
    report = run_ablation(SMOKE, REGISTRY, out, overrides=TINY, device="cpu", log=lines.append)
    ab = load_ablation(SMOKE, out, TINY)
    assert len(ab.jobs) == 14 and [j.label for j in ab.jobs[:2]] == [
        "vgg[adversarial.weight=0.001]/seed0", "mse[adversarial.weight=0.001]/seed0"]
    job = ab.jobs[-1]
    assert job.seed == 2 and job.point == (("phases.srgan.losses.adversarial.weight", 0.01),)
    assert job.config.phases["srgan"].losses["adversarial"]["weight"] == 0.01
    assert job.run_dir == out / "mse" / "adversarial.weight=0.01" / "seed2"
    curve = [json.loads(x) for x in (job.run_dir / "curve.jsonl").read_text().splitlines()]
    assert sorted(p.name for p in (job.run_dir / "models").iterdir()) == [
        "srgan.fp16.safetensors", "srgan.fp16.safetensors.key"]
    assert [r["step"] for r in curve] == [2, 4, 6]

    text = report.read_text()
    data = json.loads((out / "report.json").read_text())
    # the answer leads with the declared primary endpoint, the rest is labelled exploratory
    assert text.index("## Primary endpoint") < text.index("## Answer at a single setting "
                                                          "(exploratory)")
    prim = data["primary"]
    assert prim["metric"] == "ssim_y" and set(prim["difference"]) == {"mse"}
    d = prim["difference"]["mse"]
    assert d["low"] <= d["value"] <= d["high"] and d["p_holm"] == pytest.approx(d["p"])
    for png in ("perception_distortion.png", "learning_curves.png", "loss_curves.png",
                "forest.png", "crops.png"):
        assert (out / png).stat().st_size > 0 and f"({png})" in text
    matched = data["matched_distortion"]["ssim_y"]
    assert len(matched["points"]["vgg"]) == 3
    # the levels span the PSNR-Y range every run covers (none where the ranges do not overlap,
    # which six updates of a tiny generator can give), and each run is compared at each level
    means = {run: [p["psnr"]["value"] for p in pts] for run, pts in matched["points"].items()}
    low, high = max(map(min, means.values())), min(map(max, means.values()))
    assert len(matched["levels"]) == (5 if low < high else 0)
    assert matched["levels"] == pytest.approx(sorted(matched["levels"]))
    assert all(low - 1e-9 <= lv <= high + 1e-9 for lv in matched["levels"])
    assert all(len(v) == len(matched["levels"]) for v in matched["difference"].values())
    assert "Kendall's τ" in text
    # the reference model is scored beside bicubic, and the runs are compared with it
    assert data["references"]["start"]["scores"]["val"]["psnr_y"]
    assert "start" in data["statistics"]["psnr_y"]["difference"]

    # the same jobs judged at the baseline's own PSNR-Y at the primary weight (no level
    # guessed before training): the level is the baseline's mean there
    at_base = yaml.safe_load(SMOKE.read_text())
    at_base["base"] = str(SMOKE.parent / at_base["base"])
    at_base["primary"]["at_baseline_psnr"] = True
    (tmp_path / "at_base.yaml").write_text(yaml.safe_dump(at_base, sort_keys=False))
    run_ablation(tmp_path / "at_base.yaml", REGISTRY, out, overrides=TINY, device="cpu",
                 report_only=True, log=lines.append)
    prim = json.loads((out / "report.json").read_text())["primary"]
    vgg_at = next(p for p in matched["points"]["vgg"] if p["point"] == "adversarial.weight=0.01")
    assert prim["at_baseline_psnr"] and prim["psnr"] == pytest.approx(vgg_at["psnr"]["value"])
    assert set(prim["difference"]) | set(prim["missing"]) == {"mse"}
    assert "at the PSNR-Y `vgg` reaches at" in (out / "report.md").read_text()
    # every interval, recomputed from report.json alone by the independent checker, agrees
    # (the sweep-point primary before, the matched-PSNR-Y primary now); a changed bound does not
    spec = importlib.util.spec_from_file_location("check_report",
                                                  REPO / "scripts" / "check_report.py")
    checker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checker)
    at_base_data = json.loads((out / "report.json").read_text())
    for report_data in (data, at_base_data):
        count, worst, bad = checker.check(report_data)
        assert count > 100 and worst < 1e-6 and not bad
    # (at the matched PSNR-Y a tiny run may be "not reached": tamper where a difference is)
    tampered = next(r for r in (at_base_data, data) if r["primary"]["difference"])
    run, d = next(iter(tampered["primary"]["difference"].items()))
    d["high"] += 1e-3
    assert checker.check(tampered)[2] == [
        f"primary.{run}.high: report {d['high']:.6g}, recomputed {d['high'] - 1e-3:.6g}"]

    # people rate the runs at the primary point: one method per run, fp16 files load
    from plfw.cli import main

    study = tmp_path / "mos"
    assert main(["mos", "create", str(study), "--from-ablation", str(out), "--seed", "1",
                 "--calibration", "1"]) == 0
    manifest = json.loads((study / "study.json").read_text())
    assert {"bicubic", "vgg", "mse"} <= set(manifest["methods"])
    assert not any("[" in m for m in manifest["methods"])  # one method per run, not per arm

    # while a study runs: its curves so far from the logs alone, nothing trained or scored
    (out / "learning_curves.png").unlink()
    lines.clear()
    drawn = run_ablation(SMOKE, REGISTRY, out, overrides=TINY, curves_only=True,
                         log=lines.append)
    assert drawn == out / "learning_curves.png" and drawn.stat().st_size > 0
    assert lines == [f"plfw ablate: wrote {out / 'learning_curves.png'}",
                     f"plfw ablate: wrote {out / 'loss_curves.png'}"]
    with pytest.raises(UserError, match="no job has logged anything yet"):
        run_ablation(SMOKE, REGISTRY, tmp_path / "empty", overrides=TINY, curves_only=True)


def _write(tmp: Path, **changes: object) -> Path:
    data: dict = yaml.safe_load(SMOKE.read_text())
    data["base"] = str(REPO / "configs" / "ablation" / "smoke_base.yaml")
    data["eval"]["sets"] = {"val": {"hr": str(REPO / "assets" / "photos" / "val")}}
    data["eval"]["references"] = {}
    data.update(changes)
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(("changes", "message"), [
    ({"sweep": {"phases.srgan.lr": []}}, "distinct values"),
    ({"extra_seeds": [{"at": {"phases.srgan.losses.adversarial.weight": 5.0}, "seeds": [2]}]},
     "is not one of sweep"),
    ({"primary": {"metric": "lpips", "point": {}}}, "primary.metric 'lpips'"),
    ({"primary": {"metric": "ssim_y"}}, "give `psnr:`"),
    ({"primary": {"metric": "ssim_y", "psnr": 20.0, "at_baseline_psnr": True}}, "drop `psnr:`"),
    ({"eval": {"sets": {"val": {"hr": "x"}}, "curve": {"at": [2], "sets": ["nope"]}}},
     "no eval set 'nope'"),
    ({"artefacts": "some"}, "artefacts"),
    ({"report": {"crop_sets": ["Set5"]}}, r"report.crop_sets: no eval set 'Set5'"),
])
def test_bad_sweep_files(tmp_path: Path, changes: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_ablation(_write(tmp_path, **changes))


def test_points_and_arms(tmp_path: Path) -> None:
    ab = load_ablation(_write(tmp_path, sweep={"phases.srgan.losses.adversarial.weight": [1e-3],
                                               "phases.srgan.lr": [1e-4, 3e-4]},
                              extra_seeds=[], primary=None))
    assert [p for p in ab.points] == [
        (("phases.srgan.losses.adversarial.weight", 1e-3), ("phases.srgan.lr", 1e-4)),
        (("phases.srgan.losses.adversarial.weight", 1e-3), ("phases.srgan.lr", 3e-4))]
    assert list(ab.arms)[:2] == ["vgg[adversarial.weight=0.001,srgan.lr=0.0001]",
                                 "vgg[adversarial.weight=0.001,srgan.lr=0.0003]"]
    assert len(ab.jobs) == 2 * 2 * 2
    # the run's own overrides come after the sweep's: a run can pin a swept key
    pinned = load_ablation(_write(tmp_path, runs={"a": ["phases.srgan.lr=5e-4"]},
                                  sweep={"phases.srgan.lr": [1e-4, 3e-4]}, extra_seeds=[],
                                  baseline=None, primary=None))
    assert {j.config.phases["srgan"].lr for j in pinned.jobs} == {5e-4}


def test_pairs_of_runs_are_compared_where_their_curves_overlap(tmp_path: Path) -> None:
    """When the baseline's curve overlaps no other, the declared comparisons compare nothing;
    the exploratory pairs still compare every two runs over the PSNR-Y range they share
    (Holm over all pairs and levels), and a pair without a shared range is not compared."""
    from plfw.studies.ablation import point_label
    from plfw.studies.analysis import Pool
    from plfw.studies.pairs import pair_lines, pairwise
    from plfw.studies.scores import MetricInfo, Scores

    ab = load_ablation(_write(tmp_path, runs={"far": [], "b": [], "c": []}, baseline="far",
                              primary={"metric": "gmsd", "set": "val", "point": {
                                  "phases.srgan.losses.adversarial.weight": 1e-2},
                                  "at_baseline_psnr": True}))
    weights = [1e-3, 1e-2, 1e-1]
    psnr = {"far": [25.0, 25.5, 26.0], "b": [27.0, 28.0, 29.0], "c": [28.0, 29.0, 30.0]}
    noise = [0.0, 0.01, -0.01, 0.02, -0.02, 0.0]  # per image, shared by every job
    scores = Scores()
    for job in ab.jobs:
        k = weights.index(job.point[0][1])
        seed = 0.003 * (job.seed - 0.5)  # seeds differ a little
        gmsd = 0.1 + (0.05 if job.run == "c" else 0.0) + seed
        scores.values[job.label] = {"val": {
            "psnr_y": [psnr[job.run][k] + 10 * n + seed for n in noise],
            "gmsd": [gmsd + n for n in noise]}}
    info = MetricInfo("gmsd", {"name": "gmsd"}, False, (), lambda sr, hr: 0.0)
    result = pairwise(ab, info, scores, Pool(["val"], {"val": [True] * len(noise)}))
    assert result["metric"] == "gmsd" and result["set"] == "val"
    # only b and c share a range (28-29 dB); b is lower (better) there by 0.05 at every level
    [pair] = result["pairs"]
    assert (pair["a"], pair["b"]) == ("b", "c")
    assert pair["levels"] == pytest.approx([28.0, 28.5, 29.0], abs=1e-6)
    for d in pair["difference"]:
        assert d["value"] == pytest.approx(-0.05, abs=2e-3) and d["high"] < 0
        assert d["p"] <= d["p_holm"] <= min(1.0, 3 * d["p"]) + 1e-12  # a family of 3 tests
    assert pair["verdict"] == "`b` better over the shared range"
    assert result["not_compared"] == [["far", "b"], ["far", "c"]]
    text = "\n".join(pair_lines(result, 0.95))
    assert "Holm-corrected over all 3 comparison(s) of this table. Exploratory" in text
    assert "| `b` − `c` | 28.00-29.00 dB | 28.00 dB: **-0.0" in text
    assert text.count("▲") == 3 and "| `b` better over the shared range |" in text
    assert "so not compared: `far` and `b`, `far` and `c`." in text
    # the independent checker recomputes them from per-image scores alone, and sees a change
    spec = importlib.util.spec_from_file_location("check_report",
                                                  REPO / "scripts" / "check_report.py")
    checker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checker)
    data = {"sets": {"val": [f"im{i}" for i in noise]}, "baseline": "far", "bicubic": None,
            "statistics_method": {"confidence": 0.95}, "references": {}, "primary": None,
            "kept_in_pool": {"val": [True] * len(noise)}, "statistics_per_point": {},
            "jobs": {j.label: {"run": j.run, "point": point_label(j.point),
                               "scores": scores.values[j.label]} for j in ab.jobs},
            "pairs": json.loads(json.dumps(result))}
    count, worst, bad = checker.check(data)
    assert count == 15 and worst < 1e-9 and not bad  # 3 levels x (value, low, high, p, Holm p)
    data["pairs"]["pairs"][0]["difference"][1]["high"] += 1e-3
    data["pairs"]["pairs"][0]["difference"][2]["p_holm"] += 1e-3
    assert [b.split(":")[0] for b in checker.check(data)[2]] == ["pairs.b-c[1].high",
                                                                  "pairs.b-c[2].p_holm"]
    # one seed each: no interval, so nothing is claimed either way
    single = Scores({k: v for k, v in scores.values.items() if k.endswith("seed0")})
    [pair] = pairwise(ab, info, single, Pool(["val"], {"val": [True] * len(noise)}))["pairs"]
    assert pair["verdict"] == "untested (no interval: a run with one seed)"


def test_duplicate_eval_images_are_counted_once(tmp_path: Path) -> None:
    from plfw.evaluation.evaluate import Pair
    from plfw.studies.analysis import duplicates

    photos = load_pairs(REPO / "assets" / "photos" / "val", None, 4)
    chelsea = photos[1]
    crop = Pair("chelsea_crop", chelsea.lr[:, 1:, 1:], chelsea.hr[:, 4:, 4:])
    keep, notes = duplicates({"a": photos, "b": [crop, photos[0]]})
    assert keep == {"a": [True, True, True], "b": [False, False]}
    assert len(notes) == 2
    assert any("b/chelsea_crop shows the same picture as a/chelsea" in n for n in notes)


def test_fp16_generators_score_like_fp32(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    """A finished job packed to fp16 safetensors scores within 0.01 dB of its fp32 model, and
    only the final generator is kept."""
    monkeypatch.chdir(REPO)
    path = _write(tmp_path, runs={"vgg": []}, sweep={}, extra_seeds=[], primary=None,
                  seeds=[0], artefacts="all", eval={"sets": {"val": {
                      "hr": str(REPO / "assets" / "photos" / "val")}}})
    out = tmp_path / "out"
    run_ablation(path, REGISTRY, out, overrides=["phases.srgan.steps=1"], device="cpu",
                 report=False)
    ab = load_ablation(path, out, ["phases.srgan.steps=1"])
    job = ab.jobs[0]
    fp32 = job.run_dir / "models" / "srgan.pt"
    keep = tmp_path / "srgan_fp32.pt"
    shutil.copy(fp32, keep)
    packed = pack_job(job)
    assert packed is not None and packed.name == "srgan.fp16.safetensors"
    assert not fp32.exists() and not (job.run_dir / "checkpoints").exists()
    assert packed.stat().st_size < 0.55 * keep.stat().st_size
    assert pack_job(job) == packed  # packing twice changes nothing
    rt = make_runtime("cpu", "fp32")
    pairs = load_pairs(REPO / "assets" / "photos" / "val", None, 4)
    scores = []
    for model in (keep, packed):
        module, out_range = load_generator(model, REGISTRY)
        scores.append(evaluate(runner(module, out_range, rt), pairs, 4))
    for a, b in zip(scores[0]["per_image"], scores[1]["per_image"], strict=True):
        assert abs(a["psnr_y"] - b["psnr_y"]) < 0.01
    # the report and re-scoring read the packed file
    report = run_ablation(path, REGISTRY, out, overrides=["phases.srgan.steps=1"], device="cpu",
                          report_only=True, eval_hr=str(make_images(tmp_path / "o", 2, (48, 48))))
    assert report is not None and report.is_file()
    # a study over its size budget keeps scores, not every generator: once scored, a job whose
    # generator is gone still reports from its scores.json (by the key file beside the model)
    assert (packed.parent / (packed.name + ".key")).read_text().startswith(packed.name + ":")
    first = run_ablation(path, REGISTRY, out, overrides=["phases.srgan.steps=1"], device="cpu",
                         report_only=True)
    before = json.loads((first.parent / "report.json").read_text())["jobs"][job.label]
    packed.unlink()
    again = run_ablation(path, REGISTRY, out, overrides=["phases.srgan.steps=1"], device="cpu",
                         report_only=True)
    data = json.loads((again.parent / "report.json").read_text())
    assert data["status"][job.label] == "finished (generator not kept)"
    assert data["jobs"][job.label]["scores"] == before["scores"]
    # on images it was never scored on it is left out, with the reason, not an error
    other = run_ablation(path, REGISTRY, out, overrides=["phases.srgan.steps=1"], device="cpu",
                         report_only=True, eval_hr=str(make_images(tmp_path / "p", 2, (40, 40))))
    data = json.loads((other.parent / "report.json").read_text())
    assert data["status"][job.label] == "not scored here (generator not kept)"


def test_each_job_is_scored_as_it_finishes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    """A job's scores are cached as soon as it finishes, even without a report, so a study
    that does not keep (or loses) a generator can still report it; crops come only from the
    sets ``report.crop_sets`` names."""
    from plfw.studies.scores import SCORES_FILE, score

    monkeypatch.chdir(REPO)
    photos = str(REPO / "assets" / "photos" / "val")
    other = str(make_images(tmp_path / "other", 2, (48, 48)))
    path = _write(tmp_path, runs={"mse": ["phases.srgan.losses.content={name: mse, weight: 1.0}"]},
                  sweep={}, extra_seeds=[], primary=None, seeds=[0], baseline=None,
                  eval={"sets": {"mine": {"hr": photos}, "bench": {"hr": other}}},
                  report={"crop": 16, "zoom": 2, "crop_images": 4, "crop_sets": ["mine"]})
    out = tmp_path / "out"
    lines: list[str] = []
    run_ablation(path, REGISTRY, out, overrides=TINY, device="cpu", report=False,
                 log=lines.append)
    job = load_ablation(path, out, TINY).jobs[0]
    cache = json.loads((job.run_dir / SCORES_FILE).read_text())
    assert len(cache) == 2 and all(len(v) == 3 for v in cache.values())  # 2 sets x 3 metrics
    assert not (out / "bicubic").exists()  # only the job, no report, no bicubic
    assert any(line.startswith("plfw ablate: mse/seed0: bench scored") for line in lines)
    # the generator is lost (a disk wiped between sittings): the report still has the job
    packed = job.run_dir / "models" / "srgan.fp16.safetensors"
    packed.unlink()
    report = run_ablation(path, REGISTRY, out, overrides=TINY, device="cpu", report_only=True)
    data = json.loads((report.parent / "report.json").read_text())
    assert data["status"][job.label] == "finished (generator not kept)"
    assert set(data["jobs"][job.label]["scores"]) == {"mine", "bench"}
    # crops: the photos' 3 images only, never the benchmark set's
    _, _, scores, _ = score(load_ablation(path, out, TINY), REGISTRY, "cpu", log=lambda _: None)
    assert [s for s, _, _ in scores.picks] == ["mine"] * 3


def test_other_folders_judge_each_job_and_the_primary(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``--hr`` while training: each job is also scored on that folder as it finishes, with only
    the ``--metrics`` named, and its report judges the declared primary endpoint there. Cached
    scores belong to the images, not to where they lie: moved folders (another machine, a fresh
    clone) still report jobs whose generators are gone."""
    from plfw.studies.scores import SCORES_FILE, score

    monkeypatch.chdir(REPO)
    photos = tmp_path / "photos"
    shutil.copytree(REPO / "assets" / "photos" / "val", photos)
    bench = make_images(tmp_path / "bench" / "BSD100" / "HR", 2, (48, 48), seed=3)
    runs = {"vgg": [], "mse": ["phases.srgan.losses.content={name: mse, weight: 1.0}"]}
    primary = {"metric": "ssim_y", "set": "val", "point": {}}
    path = _write(tmp_path, runs=runs, sweep={}, extra_seeds=[], seeds=[0, 1], primary=primary,
                  eval={"sets": {"val": {"hr": str(photos)}}}, metrics=["psnr_y", "ssim_y", "gmsd"])
    out = tmp_path / "out"
    with pytest.raises(UserError, match="--metrics: 'lpips' is not one of the file's metrics"):
        run_ablation(path, REGISTRY, out, overrides=TINY, eval_hr=str(bench), metrics=["lpips"])
    with pytest.raises(UserError, match="--metrics must keep psnr_y and the primary endpoint's "
                                        "ssim_y"):
        run_ablation(path, REGISTRY, out, overrides=TINY, eval_hr=str(bench), metrics=["psnr_y"])
    with pytest.raises(UserError, match="--metrics needs --hr"):
        run_ablation(path, REGISTRY, out, overrides=TINY, metrics=["psnr_y", "ssim_y"])
    run_ablation(path, REGISTRY, out, overrides=TINY, device="cpu", eval_hr=str(bench),
                 metrics=["psnr_y", "ssim_y"], progress=False, log=lambda _: None)
    ab = load_ablation(path, out, TINY)
    for job in ab.jobs:  # the file's set with every metric, the other folder with two
        cache = json.loads((job.run_dir / SCORES_FILE).read_text())
        assert sorted(len(v) for v in cache.values()) == [2, 3]
        assert not any(str(tmp_path) in key for key in cache)
    main_report = json.loads((out / "report.json").read_text())
    other = json.loads((out / "report_BSD100" / "report.json").read_text())
    assert set(main_report["sets"]) == {"val"} and set(other["sets"]) == {"BSD100"}
    assert other["primary"]["set"] == "BSD100" and set(other["primary"]["difference"]) == {"mse"}

    # a fresh clone elsewhere: the generators gone, the same images in other folders
    for job in ab.jobs:
        (job.run_dir / "models" / "srgan.fp16.safetensors").unlink()
    moved = tmp_path / "elsewhere"
    shutil.move(str(photos), moved / "photos")
    shutil.move(str(tmp_path / "bench"), moved / "bench")
    shutil.move(str(out), moved / "out")
    path = _write(tmp_path, runs=runs, sweep={}, extra_seeds=[], seeds=[0, 1], primary=primary,
                  eval={"sets": {"val": {"hr": str(moved / "photos")}}},
                  metrics=["psnr_y", "ssim_y", "gmsd"])
    _, _, scores, status = score(load_ablation(path, moved / "out", TINY), REGISTRY, "cpu",
                                 log=lambda _: None)
    assert set(status.values()) == {"finished (generator not kept)"}
    assert {k: v for k, v in scores.values.items() if k != "bicubic"} == {
        label: job["scores"] for label, job in main_report["jobs"].items()}
    report = run_ablation(path, REGISTRY, moved / "out", overrides=TINY, device="cpu",
                          report_only=True, eval_hr=str(moved / "bench" / "BSD100" / "HR"),
                          metrics=["psnr_y", "ssim_y"])
    again = json.loads((report.parent / "report.json").read_text())
    assert set(again["status"].values()) == {"finished (generator not kept)"}
    assert again["primary"]["difference"] == other["primary"]["difference"]


def test_the_primary_answer_claims_only_what_was_compared(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """Runs that could not be compared (outside the baseline's PSNR-Y) are not "not better":
    the answer says nothing was compared."""
    from plfw.studies.report import _primary_lines

    monkeypatch.chdir(REPO)
    ab = load_ablation(SMOKE, None, TINY)
    prim = {"metric": "ssim_y", "set": "val", "psnr": 25.0, "point": {}, "at_baseline_psnr": False,
            "higher_is_better": True, "difference": {},
            "missing": {"mse": "PSNR level 25 dB is outside this curve's range"}}
    assert _primary_lines(ab, prim)[-1] == ("No run could be compared with `vgg` on the primary "
                                            "endpoint (why: above), so it cannot say whether "
                                            "any is better.")
    prim["difference"] = {"mse": {"value": -0.01, "low": -0.02, "high": 0.005, "p_holm": 0.2}}
    prim["missing"] = {}
    assert _primary_lines(ab, prim)[-1] == ("No run compared is better than `vgg` on the "
                                            "primary endpoint.")

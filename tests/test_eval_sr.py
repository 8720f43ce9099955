"""`plfw eval --sr/--metrics` and the stem rule shared with `plfw mos create` (issue 17), and
the journey upscale -> eval --sr -> mos create on the shipped photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import make_images

from plfw.cli import main
from plfw.core.errors import UserError
from plfw.evaluation.evaluate import bicubic, load_pairs
from plfw.evaluation.stems import base_stem, match_stems
from plfw.imaging.images import list_images, save_image

PHOTOS = Path(__file__).resolve().parents[1] / "assets" / "photos" / "val"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("stem,base", [
    ("baby", "baby"), ("baby_x4", "baby"), ("baby_x4_SR", "baby"), ("baby_SR", "baby"),
    ("baby_sr", "baby"), ("baby_out", "baby"), ("baby-x2", "baby"), ("img_001_SRF_4", "img_001"),
    ("baby_rlt", "baby"), ("x4", "x4"), ("baby_x4extra", "baby_x4extra"), ("sr_baby", "sr_baby"),
])
def test_base_stem_strips_only_known_suffixes(stem: str, base: str) -> None:
    assert base_stem(stem) == base


@pytest.mark.parametrize("stem,base", [
    ("0001x4", "0001"), ("0001X2", "0001"), ("0001_x4", "0001"), ("0001_LR", "0001"),
    ("baby_LR_x4", "baby"), ("img_001_SRF_4_LR", "img_001"), ("0001-lrbi", "0001"),
    ("x4", "x4"), ("baby", "baby"), ("baby_x4_SR", "baby_x4_SR"), ("lr_baby", "lr_baby"),
])
def test_base_stem_strips_lr_suffixes_for_lr_images(stem: str, base: str) -> None:
    assert base_stem(stem, lr=True) == base
    assert base_stem("0001x4") == "0001x4"  # SR outputs keep the separator rule


def test_match_stems_prefers_exact_names_and_refuses_two_candidates() -> None:
    files = {s: Path(f"{s}.png") for s in ("a", "a_x4", "b_x4", "c_SR", "zebra_x4")}
    assert match_stems(["a", "b", "c"], files, "dir") == {
        "a": Path("a.png"), "b": Path("b_x4.png"), "c": Path("c_SR.png")}
    # A reference whose own name ends like a suffix still matches exactly.
    assert match_stems(["a_x4"], files, "dir") == {"a_x4": Path("a_x4.png")}
    with pytest.raises(UserError, match="both b_SR.png and b_x4.png match reference 'b'"):
        match_stems(["b"], {"b_x4": Path("b_x4.png"), "b_SR": Path("b_SR.png")}, "dir")


@pytest.fixture()
def folders(tmp_path: Path) -> dict[str, Path]:
    """HR images and their bicubic x4 outputs saved as `<stem>_x4.png`, like plfw upscale."""
    hr = make_images(tmp_path / "HR", 3, (64, 56))
    sr = tmp_path / "SR"
    sr.mkdir()
    method = bicubic(4)
    for pair in load_pairs(hr, None, 4):
        save_image(method(pair.lr), sr / f"{pair.name}_x4.png")
    return {"hr": hr, "sr": sr, "root": tmp_path}


def test_eval_sr_scores_as_model_evaluation_does(capsys: pytest.CaptureFixture[str],
                                                 folders: dict[str, Path]) -> None:
    metrics = "psnr_y,ssim_y,st_lpips_alex"
    code, out, _ = run(capsys, "eval", "--sr", str(folders["sr"]), "--hr", str(folders["hr"]),
                       "--metrics", metrics, "--json")
    assert code == 0
    from_files = json.loads(out)
    code, out, _ = run(capsys, "eval", "--model", "bicubic", "--hr", str(folders["hr"]),
                       "--metrics", metrics, "--json")
    from_model = json.loads(out)
    assert from_files["metrics"] == from_model["metrics"] == metrics.split(",")
    assert from_files["higher_is_better"] == {"psnr_y": True, "ssim_y": True,
                                              "st_lpips_alex": False}
    assert from_files["images"] == 3 and len(from_files["per_image"]) == 3
    for key in metrics.split(","):
        assert from_files[key] == pytest.approx(from_model[key], rel=1e-9)
        for a, b in zip(from_files["per_image"], from_model["per_image"], strict=True):
            assert a["name"] == b["name"] and a[key] == pytest.approx(b[key], rel=1e-9)
    code, out, _ = run(capsys, "eval", "--sr", str(folders["sr"]), "--hr", str(folders["hr"]),
                       "--metrics", "psnr_y,st_lpips_alex")
    assert code == 0 and "PSNR-Y" in out and "st_lpips_alex" in out and "mean (3 images)" in out


def test_eval_sr_errors_are_one_line(capsys: pytest.CaptureFixture[str],
                                     folders: dict[str, Path]) -> None:
    hr, sr = str(folders["hr"]), folders["sr"]
    code, _, err = run(capsys, "eval", "--sr", str(sr), "--hr", hr, "--metrics", "lpips_alx")
    assert code == 2 and err.count("\n") == 1
    assert "unknown metric 'lpips_alx'" in err and "did you mean: lpips_alex" in err
    code, _, err = run(capsys, "eval", "--sr", str(sr), "--hr", hr, "--model", "bicubic")
    assert code == 2 and "not both" in err
    (sr / "img01_x4.png").unlink()
    code, _, err = run(capsys, "eval", "--sr", str(sr), "--hr", hr)
    assert code == 2 and err.count("\n") == 1 and "img01.png" in err and "_x4" in err
    save_image(torch.rand(3, 40, 40), sr / "img01_x4.png")
    code, _, err = run(capsys, "eval", "--sr", str(sr), "--hr", hr)
    assert code == 2 and err.count("\n") == 1
    assert "img01_x4.png" in err and "img01.png" in err and "40x40" in err


@pytest.mark.parametrize(("options", "expected"), [
    (["--scale", "0"], "--scale must be >= 1, got 0"),
    (["--limit", "-1"], "--limit must be >= 0, got -1"),
    (["--border", "-5"], "--border must be >= 0, got -5"),
    (["--border", "1000"], "--border 1000 crops all of 'img00' (64x56 HR)"),
    (["--border", "25"], "'img00': ssim_y: ssim_y needs at least 11x11 pixels"),
    (["--scale", "100"], "img00"),  # larger than the image (as the border, for --sr)
])
@pytest.mark.parametrize("source", ["model", "sr"])
def test_eval_options_out_of_range_are_one_line_errors(
        capsys: pytest.CaptureFixture[str], folders: dict[str, Path], source: str,
        options: list[str], expected: str) -> None:
    """Issue 36: --scale 0 and --border 1000 were tracebacks; --limit -1 scored all but the
    last image and --border -5 was ignored, both with exit 0."""
    what = (["--model", "bicubic"] if source == "model" else ["--sr", str(folders["sr"])])
    code, _, err = run(capsys, "eval", *what, "--hr", str(folders["hr"]), *options)
    assert code == 2 and err.count("\n") == 1, err
    assert expected in err, err


def test_mos_create_takes_upscale_named_folders(folders: dict[str, Path]) -> None:
    from plfw.mos.create import create_study

    study = create_study(folders["root"] / "study", {"bicubic": folders["sr"]}, folders["hr"],
                         calibration=1, seed=0)
    assert {stem for _, stem in study.images} == {p.stem for p in list_images(folders["hr"])}
    assert "bicubic" in study.methods


def test_journey_upscale_eval_mos(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Upscale LR photos with both bundled models, score both folders with --sr, then build a
    MOS study straight from the two output folders."""
    from plfw.imaging.images import load_image
    from plfw.imaging.imresize import bicubic_downscale_uint8

    hr, lr = tmp_path / "HR", tmp_path / "LR"
    hr.mkdir()
    lr.mkdir()
    for name in ("camera.png", "grass.png"):
        shutil.copy(PHOTOS / name, hr / name)
        img = load_image(hr / name)
        save_image(bicubic_downscale_uint8(img * 255, 4).float() / 255, lr / name)
    scores = {}
    # srresnet keeps upscale's default `<stem>_x4` names; srgan writes bare stems.
    for model, suffix, names in (("srresnet", [], ["camera_x4.png", "grass_x4.png"]),
                                 ("srgan", ["--suffix", ""], ["camera.png", "grass.png"])):
        out = tmp_path / f"up_{model}"
        code, _, _ = run(capsys, "upscale", str(lr), "--model", model, "--out", str(out),
                         "--device", "cpu", "--quiet", *suffix)
        assert code == 0 and sorted(p.name for p in out.iterdir()) == names
        code, text, _ = run(capsys, "eval", "--sr", str(out), "--hr", str(hr), "--metrics",
                            "psnr_y,ssim_y,st_lpips_alex", "--json")
        assert code == 0
        scores[model] = json.loads(text)
    for result in scores.values():
        assert result["images"] == 2 and 20 < result["psnr_y"] < 40
    # The PSNR-oriented model wins PSNR.
    assert scores["srresnet"]["psnr_y"] > scores["srgan"]["psnr_y"]
    code, _, err = run(capsys, "mos", "create", str(tmp_path / "study"), "--methods",
                       f"srresnet={tmp_path / 'up_srresnet'}", f"srgan={tmp_path / 'up_srgan'}",
                       "--reference", str(hr))
    assert code == 0, err
    manifest = json.loads((tmp_path / "study" / "study.json").read_text())
    assert {"srresnet", "srgan"} <= set(manifest["methods"])
    assert sorted(manifest["images"]) == [["default", "camera"], ["default", "grass"]]
